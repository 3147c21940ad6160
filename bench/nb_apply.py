"""Benchmark: kovn's NB apply() against the raw ovsdb-server limit, in the same run.

The raw limit is one JSON-RPC `transact` carrying the same rows (pod ports inserted into a
switch, port groups referencing them, address sets), sent on a bare socket to a fresh
ovsdb-server: nothing can write those rows faster. kovn's figure is Reconciler.reconcile() of
the same desired rows on another fresh server: observe + plan + IDL transaction + the server's
reply. The ratio raw_time / kovn_time is printed (1.0 = as fast as the server allows).

    python bench/nb_apply.py [--ports 10000] [--groups 20]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # run as `python3 bench/nb_apply.py`, kovn installed or not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from northbound import names
from northbound.connection import NbConnection
from northbound.reconciler import Reconciler
from northbound.rows import (
    CLUSTER,
    AddressSet,
    LogicalSwitch,
    LogicalSwitchPort,
    NbRow,
    Owner,
    PortGroup,
)

SWITCH = "ovn-default"


class Server:
    """A fresh ovsdb-server with the NB schema in its own temporary directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kovn-bench-"))
        self.sock = self.dir / "nb.sock"
        subprocess.run(["ovsdb-tool", "create", str(self.dir / "nb.db"),
                        "/usr/share/ovn/ovn-nb.ovsschema"], check=True)
        self.proc = subprocess.Popen(
            ["ovsdb-server", "--no-chdir", f"--remote=punix:{self.sock}",
             f"--unixctl={self.dir / 'ctl'}", f"--log-file={self.dir / 'nb.log'}",
             str(self.dir / "nb.db")], stderr=subprocess.DEVNULL)
        while not self.sock.exists():
            time.sleep(0.01)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)


def pod(i: int) -> tuple[str, str, str]:
    """(port name, mac, ip) of pod i."""
    ip = f"10.16.{i // 250}.{i % 250 + 2}"
    mac = f"0a:58:0a:10:{i // 250:02x}:{i % 250 + 2:02x}"
    return names.pod_port(f"ns{i % 20}", f"pod-{i}"), mac, ip


def desired_rows(ports: int, groups: int) -> list[NbRow]:
    rows: list[NbRow] = [LogicalSwitch(owner=CLUSTER, name=SWITCH)]
    members: dict[int, set[str]] = {g: set() for g in range(groups)}
    ips: dict[int, set[str]] = {g: set() for g in range(groups)}
    for i in range(ports):
        name, mac, ip = pod(i)
        rows.append(LogicalSwitchPort(
            owner=Owner(names.OwnerType.POD, name.replace("_", "/", 1)), name=name,
            switch=SWITCH, addresses=(f"{mac} {ip}",), port_security=(f"{mac} {ip}",),
            options={"requested-chassis": f"node{i % 50}"},
            extra_ids={names.POD_UID_KEY: str(uuid.UUID(int=i))}))
        members[i % groups].add(name)
        ips[i % groups].add(ip)
    for g in range(groups):
        owner = Owner(names.OwnerType.NETWORK_POLICY, f"ns{g}/policy")
        rows.append(PortGroup(owner=owner, name=names.policy_port_group(f"ns{g}", "policy"),
                              ports=frozenset(members[g])))
        rows.append(AddressSet(owner=owner, name=names.namespace_address_set(f"ns{g}"),
                               addresses=tuple(sorted(ips[g]))))
    return rows


def raw_operations(rows: list[NbRow]) -> list[dict]:
    """The same rows as plain OVSDB operations in one transaction (named-uuid references)."""
    ops: list[dict] = []
    lsp_ref = {}
    for row in rows:
        if isinstance(row, LogicalSwitchPort):
            ref = "p" + uuid.uuid4().hex
            lsp_ref[row.name] = ref
            cols = row.columns()
            ops.append({"op": "insert", "table": row.TABLE, "uuid-name": ref, "row": {
                "name": row.name,
                "addresses": ["set", cols["addresses"]],
                "port_security": ["set", cols["port_security"]],
                "options": ["map", sorted(cols["options"].items())],
                "external_ids": ["map", sorted(cols["external_ids"].items())]}})
    port_refs = [["named-uuid", ref] for ref in lsp_ref.values()]
    ops.append({"op": "insert", "table": "Logical_Switch", "row": {
        "name": SWITCH, "ports": ["set", port_refs],
        "external_ids": ["map", sorted(CLUSTER.ids().items())]}})
    for row in rows:
        if isinstance(row, PortGroup):
            ops.append({"op": "insert", "table": row.TABLE, "row": {
                "name": row.name,
                "ports": ["set", [["named-uuid", lsp_ref[p]] for p in sorted(row.ports)]],
                "external_ids": ["map", sorted(row.external_ids().items())]}})
        elif isinstance(row, AddressSet):
            ops.append({"op": "insert", "table": row.TABLE, "row": {
                "name": row.name, "addresses": ["set", list(row.addresses)],
                "external_ids": ["map", sorted(row.external_ids().items())]}})
    return ops


def raw_transact(sock_path: Path, ops: list[dict]) -> float:
    """Seconds from sending one transact to its complete reply, on a bare socket."""
    request = json.dumps({"method": "transact", "params": ["OVN_Northbound", *ops], "id": 1})
    decoder = json.JSONDecoder()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(str(sock_path))
        started = time.perf_counter()
        conn.sendall(request.encode())
        buffer = ""
        while True:
            buffer += conn.recv(1 << 20).decode()
            try:
                reply, _ = decoder.raw_decode(buffer)
                break
            except json.JSONDecodeError:
                continue
        elapsed = time.perf_counter() - started
    errors = [r for r in reply["result"] if r and "error" in r]
    if reply.get("error") or errors:
        raise RuntimeError(f"raw transact failed: {reply.get('error') or errors[:3]}")
    return elapsed


def kovn_apply(sock_path: Path, rows: list[NbRow]) -> tuple[float, float, str]:
    """(first reconcile seconds, second no-op reconcile seconds, plan summary)."""
    with NbConnection(f"unix:{sock_path}", timeout=120) as nb:
        rec = Reconciler(nb)
        started = time.perf_counter()
        first = rec.reconcile(rows)
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        again = rec.reconcile(rows)
        again_s = time.perf_counter() - started
    if again:
        raise RuntimeError(f"second reconcile was not empty: {again.summary()}")
    return first_s, again_s, first.summary()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ports", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="best of N for each side")
    args = parser.parse_args()
    rows = desired_rows(args.ports, args.groups)
    ops = raw_operations(rows)
    print(f"rows: {args.ports} pod ports, {args.groups} port groups, {args.groups} address "
          f"sets, 1 switch; best of {args.rounds} rounds, a fresh ovsdb-server each")
    raw_times, kovn_times, noop_times = [], [], []
    for n in range(args.rounds):
        server = Server()
        try:
            raw_times.append(raw_transact(server.sock, ops))
        finally:
            server.stop()
        server = Server()
        try:
            first_s, again_s, summary = kovn_apply(server.sock, rows)
        finally:
            server.stop()
        kovn_times.append(first_s)
        noop_times.append(again_s)
        print(f"  round {n + 1}: raw transact {raw_times[-1]:.3f}s, kovn apply {first_s:.3f}s "
              f"({summary}), no-op reconcile {again_s:.3f}s", flush=True)
    raw, kovn = min(raw_times), min(kovn_times)
    print(f"raw ovsdb-server limit: {raw:.3f}s ({args.ports / raw:,.0f} ports/s)")
    print(f"kovn apply():           {kovn:.3f}s ({args.ports / kovn:,.0f} ports/s)")
    print(f"no-op reconcile:        {min(noop_times):.3f}s")
    print(f"ratio kovn/raw: {raw / kovn:.2f} (goal >= 0.50)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
