"""Benchmark: what one element added to a large NB column costs on the wire, at N = 100..5,000.

For each N, a fresh ovsdb-server gets through kovn's Reconciler an Address_Set of N addresses,
a Load_Balancer of N vips (in the cluster LB group) and a Port_Group of N ports. Then ONE
element is added to each, by an owner-scoped reconcile, and the bytes the client sends to
ovsdb-server for that change are counted for real by a TCP proxy between the NbConnection and
the server, with the time of the reconcile. The same change is then made again with
`Reconciler(nb, element_min=None)`, which writes changed columns whole as kovn did before
element diffs, so the ratio is visible in the same run. Goal: under 2 KB whatever N.

    python3 bench/nb_mutation.py [--sizes 100,1000,5000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python3 bench/nb_mutation.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.nb_apply import Server
from northbound import names
from northbound.connection import NbConnection
from northbound.reconciler import Reconciler
from northbound.rows import (
    AddressSet,
    LoadBalancer,
    LoadBalancerGroup,
    LogicalSwitch,
    LogicalSwitchPort,
    NbRow,
    Owner,
    PortGroup,
)

GOAL_BYTES = 2048
POLICY = Owner(names.OwnerType.NETWORK_POLICY, "bench/np")
SERVICE = Owner(names.OwnerType.SERVICE, "bench/svc")
SUBNET = Owner(names.OwnerType.SUBNET, "bench")
AS_NAME = names.namespace_address_set("bench")
LB_NAME = names.load_balancer("bench", "svc", "tcp")
PG_NAME = names.policy_port_group("bench", "np")
IN_GROUP = LoadBalancerGroup.membership(names.CLUSTER_LB_GROUP)


class CountingProxy:
    """127.0.0.1:<port> -> ovsdb-server's unix socket, counting what the client sends."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.remote = f"tcp:127.0.0.1:{self.listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._window = bytearray()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            # No Nagle on the proxy's TCP side, or small replies wait out a delayed ACK (~40 ms)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(self.target)
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if upstream:  # counted before forwarding: the server can only answer after
                    with self._lock:
                        self._window += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def mark(self) -> None:
        with self._lock:
            self._window.clear()

    def window(self) -> tuple[int, list[str]]:
        """(bytes the client sent since mark(), the JSON-RPC methods among them)."""
        with self._lock:
            raw = bytes(self._window)
        text, methods, decoder, at = raw.decode(), [], json.JSONDecoder(), 0
        while at < len(text):
            message, end = decoder.raw_decode(text, at)
            methods.append(message.get("method") or "reply")
            at = end
            while at < len(text) and text[at].isspace():
                at += 1
        return len(raw), methods

    def close(self) -> None:
        self.listener.close()


def addresses(n: int) -> tuple[str, ...]:
    return tuple(f"10.{16 + i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(n))


def vips(n: int) -> dict[str, str]:
    return {f"10.96.{i // 256}.{i % 256}:80": f"10.16.{i // 256}.{i % 256}:8080"
            for i in range(n)}


def ports(n: int) -> list[str]:
    return [names.pod_port("bench", f"pod-{i}") for i in range(n)]


def policy_rows(n_addresses: int, n_ports: int) -> list[NbRow]:
    return [AddressSet(owner=POLICY, name=AS_NAME, addresses=addresses(n_addresses)),
            PortGroup(owner=POLICY, name=PG_NAME, ports=frozenset(ports(n_ports)))]


def service_rows(n_vips: int) -> list[NbRow]:
    return [LoadBalancer(owner=SERVICE, name=LB_NAME, vips=vips(n_vips), member_of={IN_GROUP})]


@dataclass
class Cost:
    nbytes: int
    """Bytes the client sent, the largest of the repeats (they differ by a digit or so)."""
    ms: float
    """Median time of the reconcile (observe + plan + commit + reply) over the repeats."""
    methods: set[str]


def change(proxy: CountingProxy, rec: Reconciler, rows: list[NbRow], owner: Owner
           ) -> tuple[int, float, list[str]]:
    """Reconcile `rows` of `owner`: (bytes sent, ms, JSON-RPC methods sent)."""
    proxy.mark()
    started = time.perf_counter()
    result = rec.reconcile(rows, owners={owner})
    ms = (time.perf_counter() - started) * 1000
    nbytes, methods = proxy.window()
    if len(result.updates) != 1 or result.creates or result.deletes:
        raise RuntimeError(f"expected one update, got {result.summary()}")
    if rec.plan(rows, owners={owner}):
        raise RuntimeError("NB does not hold the desired rows after the change")
    return nbytes, ms, methods


def run(n: int, repeats: int) -> dict[str, dict[str, Cost]]:
    """{column: {"element" | "whole": cost}} of one-element changes to columns of size ~n."""
    server = Server()
    proxy = CountingProxy(server.sock)
    try:
        with NbConnection(proxy.remote, timeout=120) as nb:
            by_mode = {"element": Reconciler(nb), "whole": Reconciler(nb, element_min=None)}
            size = {"Address_Set.addresses": n, "Port_Group.ports": n, "Load_Balancer.vips": n}
            spare = 2 * repeats + 1
            by_mode["element"].reconcile([
                LoadBalancerGroup(name=names.CLUSTER_LB_GROUP),
                LogicalSwitch(owner=SUBNET, name="bench"),
                *(LogicalSwitchPort(owner=SUBNET, name=p, switch="bench")
                  for p in ports(n + spare)),
                *policy_rows(n, n), *service_rows(n)])

            def rows_of(column: str) -> tuple[list[NbRow], Owner]:
                if column == "Load_Balancer.vips":
                    return service_rows(size[column]), SERVICE
                return policy_rows(size["Address_Set.addresses"],
                                   size["Port_Group.ports"]), POLICY

            costs: dict[str, dict[str, Cost]] = {}
            for mode, rec in by_mode.items():
                for column in size:
                    samples = []
                    for _ in range(repeats):
                        size[column] += 1  # ONE element more
                        samples.append(change(proxy, rec, *rows_of(column)))
                    costs.setdefault(column, {})[mode] = Cost(
                        max(s[0] for s in samples), statistics.median(s[1] for s in samples),
                        {m for s in samples for m in s[2]})
            return costs
    finally:
        proxy.close()
        server.stop()


def _kb(nbytes: int) -> str:
    return f"{nbytes:,} B" if nbytes < 10_000 else f"{nbytes / 1024:,.1f} KB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,5000",
                        help="comma-separated N (elements already in each column)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="one-element changes per column and mode (median time)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {}
    for n in sizes:
        started = time.perf_counter()
        results[n] = run(n, args.repeats)
        print(f"  N={n:,}: set up and measured on a fresh ovsdb-server in "
              f"{time.perf_counter() - started:.1f}s", flush=True)
    print(f"\nONE element added to a column of N: bytes the client sent to ovsdb-server, and "
          f"the reconcile's median time over {args.repeats} such changes")
    width = 22
    print(f"{'column':<24}{'writes':<15}" + "".join(f"{f'N={n:,}':<{width}}" for n in sizes))
    worst = 0
    for column in results[sizes[0]]:
        for mode, label in (("element", "by element"), ("whole", "whole (before)")):
            cells = []
            for n in sizes:
                cost = results[n][column][mode]
                if mode == "element":
                    worst = max(worst, cost.nbytes)
                cells.append(f"{_kb(cost.nbytes)} {cost.ms:.1f} ms")
            print(f"{column if mode == 'element' else '':<24}{label:<15}"
                  + "".join(f"{c:<{width}}" for c in cells))
        ratios = [results[n][column]["whole"].nbytes / results[n][column]["element"].nbytes
                  for n in sizes]
        print(f"{'':<24}{'ratio':<15}" + "".join(f"{f'{r:.1f}x':<{width}}" for r in ratios))
    methods = sorted({m for n in sizes for c in results[n].values() for k in c.values()
                      for m in k.methods})
    print(f"\nmessages in the measured windows: {', '.join(methods)}")
    print("Port_Group.ports is a reference set, changed by element before this change too.")
    verdict = "met" if worst < GOAL_BYTES else "MISSED"
    print(f"goal: by-element change under {_kb(GOAL_BYTES)} whatever N: {verdict} "
          f"(largest {_kb(worst)})")
    return 0 if worst < GOAL_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
