"""`kovn trace NS/POD DST PROTO [PORT]`: would this pod's new connection get through, and
which NetworkPolicy (or default deny) decided?

DST is an IPv4 address, `NS/POD`, or the two words `svc NS/NAME`. The pod's MAC, IP and
switch come from its NB Logical_Switch_Port (no Kubernetes access needed); ovn-trace runs on
the SB with `--ct=new` for every conntrack lookup; the logical flows it ran in the ACL stages
are looked up in SB (server-side select by stage and priority, then by uuid prefix) for
their `stage-hint`, the NB ACL's uuid prefix, and the ACL's kovn external_ids name the
policy. The pure part is northbound/trace.py (microflow, verdict) and
northbound/trace_output.py (ovn-trace's output read back).

Exit status: 0 allowed, 1 dropped or rejected, 2 could not trace (the message says why).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cli.remotes import sandbox_default
from cli.show import nb_address
from northbound import names, trace
from northbound.apply import PlanCommand
from northbound.connection import DEFAULT_NB, NbConnection, NorthboundUnavailable
from northbound.plan import Plan
from northbound.trace import TraceError
from northbound.trace_output import Step, parse_trace

DEFAULT_SB = "unix:/tmp/kovn-sandbox/sb.sock"
USAGE = ("kovn trace NS/POD {IP | NS/POD | svc NS/NAME} {tcp|udp|icmp} [PORT] "
         "[--backend IP:PORT] [--raw] [--nb ADDR] [--sb ADDR]")


def sb_address(args: argparse.Namespace) -> str:
    return args.sb or os.environ.get("KOVN_SB") or sandbox_default(DEFAULT_SB)


@dataclass(frozen=True)
class Request:
    source: tuple[str, str]
    dst_kind: str  # "ip" | "pod" | "svc"
    dst: str
    protocol: str
    port: int | None


def parse_request(source: str, words: Sequence[str]) -> Request:
    """`SRC DST PROTO [PORT]`, DST being an IP, `ns/pod` or the two words `svc ns/name`."""
    words, protocols = list(words), " | ".join(trace.PROTOCOLS)
    if not words:
        raise TraceError("missing destination and protocol, e.g. `kovn trace x/a y/b tcp 80`")
    if words[0] in ("svc", "service"):
        if len(words) < 2:
            raise TraceError("`svc` needs the Service as NAMESPACE/NAME: `svc x/web tcp 80`")
        kind, dst, rest = "svc", words[1], words[2:]
        trace.parse_pod(dst)
    else:
        kind, dst, rest = "pod", words[0], words[1:]
        try:
            dst, kind = str(ipaddress.IPv4Address(dst)), "ip"
        except ValueError:
            if "/" not in dst:
                raise TraceError(f"destination {dst!r} is neither an IPv4 address, "
                                 "NAMESPACE/POD nor `svc NAMESPACE/NAME`") from None
            trace.parse_pod(dst)
    if not rest:
        raise TraceError(f"give a protocol after the destination: {protocols}")
    if rest[0].lower() not in trace.PROTOCOLS:
        raise TraceError(f"unknown protocol {rest[0]!r}: use one of {protocols}")
    protocol, tail = rest[0].lower(), rest[1:]
    if len(tail) > 1:
        raise TraceError(f"unexpected words after the port: {' '.join(tail[1:])}")
    port = None
    if tail:
        if protocol == "icmp":
            raise TraceError("icmp takes no port (an echo request is traced)")
        if not tail[0].isdigit() or not 0 < int(tail[0]) < 65536:
            raise TraceError(f"port {tail[0]!r} is not a number in 1..65535")
        port = int(tail[0])
    elif protocol != "icmp" and kind != "svc":
        raise TraceError(f"{protocol} needs a destination port, e.g. `{protocol} 80`")
    return Request(trace.parse_pod(source), kind, dst, protocol, port)


def trace_argv(sb: str, switch: str, flow: str, lb_dst: str | None = None) -> list[str]:
    argv = ["ovn-trace", f"--db={sb}", "--detailed", *["--ct=new"] * trace.CT_NEW_STATES]
    if lb_dst:
        argv.append(f"--lb-dst={lb_dst}")
    return [*argv, switch, flow]


def report(source: str, target: trace.Target, protocol: str, verdict: trace.Verdict) -> list[str]:
    """The lines `kovn trace` prints."""
    what = protocol if target.port is None else f"{protocol}/{target.port}"
    lines = [f"{source} -> {target.text} {what}: {verdict.word} {verdict.reason}"]
    if target.load_balancer:
        if target.backend:
            chosen = target.backend
            if target.expected is not None:
                chosen += f" ({target.expected.label})"
            line = f"  load balancer {target.load_balancer} chose {chosen}"
            if target.other_backends:
                line += (f"; other backends: {', '.join(target.other_backends)} "
                         "(pick one with --backend)")
            lines.append(line)
        elif target.load_balancer not in verdict.reason:
            lines.append(f"  load balancer {target.load_balancer} has no backends")
    for step, acl in verdict.hits:
        label = f'"{acl.name}"' if acl.name else acl.uuid[:8]
        about = trace.describe_acl(acl)
        about = "" if about in verdict.reason else f": {about}"
        lines.append(f"  ACL {label} ({acl.direction} {acl.priority} {acl.action} on "
                     f"{acl.holder or '?'}) in {step.where}{about}")
    if verdict.allowed:
        lines.append(f"  delivered to {', '.join(verdict.delivered)}")
    return lines


def _opt(value: Any) -> Any:
    return value[0] if value else None


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.split("/")[0]))
    except ValueError:
        return None


def parse_addresses(addresses: Iterable[str]) -> tuple[str, tuple[str, ...]] | None:
    """(MAC, IPs) of the first LSP address entry "MAC IP..." that has an IP."""
    for entry in addresses:
        mac, *words = entry.split()
        ips = tuple(ip for ip in map(_ip, words) if ip)
        if ips and re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", mac):
            return mac.lower(), ips
    return None


def northbound_view(tables: dict[str, Any]) -> trace.Northbound:
    """What a trace needs from the IDL tables (run in the connection thread)."""
    ports: dict[str, trace.SwitchPort] = {}
    holders: dict[str, str] = {}
    for ls in tables["Logical_Switch"].rows.values():
        for acl in ls.acls:
            holders[str(acl.uuid)] = f"switch {ls.name}"
        for lsp in ls.ports:
            parsed = parse_addresses(lsp.addresses)
            if parsed is None:
                continue
            ids = dict(lsp.external_ids)
            ports[lsp.name] = trace.SwitchPort(
                lsp.name, ls.name, parsed[0], parsed[1],
                owner_type=ids.get(names.OWNER_TYPE_KEY, ""),
                owner=ids.get(names.OWNER_KEY, ""))
    for pg in tables["Port_Group"].rows.values():
        for acl in pg.acls:
            holders[str(acl.uuid)] = f"port group {pg.name}"
    acls = {}
    for row in tables["ACL"].rows.values():
        uuid = str(row.uuid)
        acls[uuid] = trace.Acl(uuid, row.direction, row.priority, row.match, row.action,
                               name=_opt(row.name), external_ids=dict(row.external_ids),
                               holder=holders.get(uuid, ""))
    return trace.Northbound(
        ports=ports,
        router_macs={r.name: r.mac for r in tables["Logical_Router_Port"].rows.values()},
        load_balancers={r.name: dict(r.vips) for r in tables["Load_Balancer"].rows.values()},
        acls=acls,
    )


def read_northbound(address: str, timeout: float) -> trace.Northbound:
    view: list[trace.Northbound] = []

    def snapshot(tables: dict[str, Any]) -> Plan:
        view.append(northbound_view(tables))
        return Plan()

    with NbConnection(address, timeout=timeout) as nb:
        nb.execute(PlanCommand(nb.api, snapshot))
    return view[0]


def _run(argv: list[str], timeout: float, what: str, hint: str = "") -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise TraceError(f"{argv[0]} is not installed: install Debian's ovn-common "
                         "(ovn-trace) and openvswitch-common (ovsdb-client)") from exc
    except subprocess.TimeoutExpired as exc:
        raise TraceError(f"{what} did not finish within {timeout:.0f}s: is the SB "
                         "reachable (--sb)?") from exc
    if done.returncode != 0:
        detail = " ".join((done.stderr or done.stdout).split())[-600:]
        raise TraceError(f"{what} failed (exit {done.returncode}): {detail}{hint}")
    return done.stdout


def run_trace(sb: str, argv: list[str], timeout: float) -> str:
    out = _run(argv, timeout, "ovn-trace", hint=(
        f". Is the SB at {sb} (pass --sb, e.g. {DEFAULT_SB} or unix:/run/ovn/ovnsb_db.sock) "
        "and ovn-northd running? A port NB has but the SB has not yet (`unknown logical "
        "port`) means northd is behind or stopped."))
    if not out.startswith("#"):  # e.g. `unknown datapath "x"` on stdout, exit 0
        raise TraceError(f"ovn-trace on {sb}: {out.strip()}: is ovn-northd running, "
                         "and is this the SB of the NB read (--nb/--sb)?")
    return out


def lflow_rows(sb: str, steps: list[Step], timeout: float) -> list[dict[str, Any]]:
    """The SB Logical_Flow rows of the traced ACL-stage flows' stages and priorities."""
    keys = sorted({(s.stage, s.priority) for s in steps})
    if not keys:
        return []
    ops: list[Any] = ["OVN_Southbound"]
    for stage, priority in keys:
        ops.append({"op": "select", "table": "Logical_Flow",
                    "where": [["external_ids", "includes", ["map", [["stage-name", stage]]]],
                              ["priority", "==", priority]],
                    "columns": ["_uuid", "priority", "match", "external_ids"]})
    out = _run(["ovsdb-client", f"--timeout={max(1, int(timeout))}", "query", sb,
                json.dumps(ops)], timeout + 5, f"reading Logical_Flow from the SB at {sb}")
    rows = []
    for result in json.loads(out):
        if "error" in result:
            raise TraceError(f"SB at {sb} refused the Logical_Flow query: {result}")
        for row in result.get("rows", ()):
            rows.append({"_uuid": row["_uuid"][1], "priority": row["priority"],
                         "match": row["match"], "external_ids": dict(row["external_ids"][1])})
    return rows


def run(args: argparse.Namespace) -> int:
    try:
        request = parse_request(args.source, args.target)
        nb = read_northbound(nb_address(args), args.timeout)
        source = trace.source_port(nb, *request.source)
        target = trace.resolve_target(nb, source, request.dst_kind, request.dst,
                                      request.protocol, request.port, args.backend)
        flow = trace.microflow(source, target, request.protocol)
        sb = sb_address(args)
        argv = trace_argv(sb, source.switch, flow, target.backend)
        output = run_trace(sb, argv, args.timeout * 3)
        steps = parse_trace(output)
        acl_steps = trace.acl_steps(steps)
        hints = trace.stage_hints(acl_steps, lflow_rows(sb, acl_steps, args.timeout))
        by_uuid = {s.uuid: acl for s in acl_steps
                   if (acl := trace.acl_for(s, hints.get(s.uuid), nb.acls)) is not None}
    except (TraceError, NorthboundUnavailable) as exc:
        print(f"kovn: {exc}", file=sys.stderr)
        return 2
    expected = target.expected.name if target.expected is not None else None
    verdict = trace.decide(steps, by_uuid, source.name, expected, target.load_balancer)
    if args.raw:
        print(f"$ {' '.join(argv[:-1])} '{flow}'")
        print(output.rstrip())
        print()
    print("\n".join(report(source.label, target, request.protocol, verdict)))
    return 0 if verdict.allowed else 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "trace", usage=USAGE,
        help="trace a new connection from a pod with ovn-trace and name the ACL that decided",
        description="Trace the first packet of a new connection from pod NS/POD with "
        "ovn-trace on the SB, and say whether it is allowed or dropped and by which "
        "NetworkPolicy rule, default deny, private Subnet or other ACL. The destination is "
        "an IPv4 address, a pod NS/POD, or a Service `svc NS/NAME` (its cluster IP; the load "
        "balancer's first backend unless --backend picks one). "
        "Exit status: 0 allowed, 1 dropped or rejected, 2 could not trace.",
        epilog="examples: kovn trace x/a 10.16.0.7 tcp 80;  kovn trace x/a y/b icmp;  "
        "kovn trace x/a svc x/web tcp 80 --backend 10.16.0.9:8080",
    )
    parser.add_argument("source", metavar="NS/POD", help="the pod the connection starts from")
    parser.add_argument("target", nargs="+", metavar="DST PROTO [PORT]",
                        help="destination (IP, NS/POD or `svc NS/NAME`), tcp|udp|icmp, and "
                        "the destination port (tcp/udp; optional for a Service with one)")
    parser.add_argument("--backend", metavar="IP:PORT",
                        help="for a Service: the backend the load balancer picks")
    parser.add_argument("--raw", action="store_true", help="also print ovn-trace's output")
    parser.add_argument("--nb", metavar="ADDR",
                        help=f"NB address (default $KOVN_NB or {DEFAULT_NB})")
    parser.add_argument("--sb", metavar="ADDR",
                        help=f"SB address (default $KOVN_SB or {DEFAULT_SB})")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for NB and SB")
    parser.set_defaults(func=run)
