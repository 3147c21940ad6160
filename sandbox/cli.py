"""`kovn sandbox up|status|demo|exec|probe|restart|down`: the sandbox from the command line.

Failures the user can act on (already up, nothing up, not root, a tool missing) print one
line `kovn: <what to do>` on stderr and exit 1; a traceback would only hide that line.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from kube.client import KubeError
from sandbox.cluster import Sandbox
from sandbox.config import STATE_DIR_ENV, SandboxConfig, default_state_dir
from sandbox.errors import SandboxError
from sandbox.kube import CONTROLLER
from sandbox.kube import bin_dir as kube_bin_dir

Handler = Callable[[argparse.Namespace], int]


def register(subparsers: Any) -> None:
    """Add the `sandbox` verb and its actions to the kovn command line."""
    parser = subparsers.add_parser(
        "sandbox",
        help="run a local OVN/OVS sandbox (central + nodes in network namespaces)",
        description="A local OVN sandbox: OVN central and N nodes, each in its own network "
        "namespace on the userspace datapath, joined by a Geneve overlay. Needs root.",
    )
    parser.set_defaults(func=lambda _args: _usage(parser))
    actions = parser.add_subparsers(dest="sandbox_action", metavar="ACTION")

    up = actions.add_parser(
        "up", help="start the sandbox (OVN, Kubernetes control plane, kovn controller) and "
        "wait until every chassis is up and every node Ready")
    _add_state_dir(up)
    up.add_argument("--nodes", type=int, default=2, help="number of nodes (default 2)")
    up.add_argument("--prefix", default="kovn",
                    help="netns name prefix: PREFIX-node1, PREFIX-underlay... (default kovn)")
    up.add_argument("--nb-tcp-port", type=_tcp_port, default=6641, metavar="PORT",
                    help="also serve the NB on tcp:127.0.0.1:PORT; 0 or 'none' disables "
                    "(default 6641)")
    up.add_argument("--ovn-ha", action="store_true",
                    help="run OVN NB and SB each as a 3-member raft cluster (nb1..nb3, "
                    "sb1..sb3; clients get all members, comma-separated); with --nb-tcp-port "
                    "the NB members serve PORT, PORT+1 and PORT+2")
    up.add_argument("--no-kube", dest="kube", action="store_false",
                    help="start only OVN: no Kubernetes control plane, no controller")
    up.add_argument("--no-controller", dest="controller", action="store_false",
                    help="do not start the kovn controller (run your own)")
    up.add_argument("--workloads", action=argparse.BooleanOptionalAction, default=None,
                    help="run pods: a kovn node agent and a sandbox kubelet per node "
                    "(default: when the controller runs; --no-workloads: pods are scheduled "
                    "but never run, a heartbeat keeps the nodes Ready)")
    for option, default, what in (("--apiserver-port", 6443, "kube-apiserver"),
                                  ("--etcd-port", 2379, "etcd's clients"),
                                  ("--etcd-peer-port", 2380, "etcd's peers")):
        up.add_argument(option, type=_any_port, default=default, metavar="PORT",
                        help=f"127.0.0.1 port of {what}; 0 picks a free one (default {default})")
    up.add_argument("--admin-identities", dest="service_accounts", action="store_false",
                    help="run the kovn controller and node agents as the admin instead of "
                    "the ServiceAccounts kovn-system/kovn-controller and kovn-node with the "
                    "RBAC of manifests/rbac (the default)")
    up.set_defaults(func=_guarded(cmd_up))

    status = actions.add_parser("status", help="show what runs, its pids, logs and remotes")
    _add_state_dir(status)
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=_guarded(cmd_status))

    demo = actions.add_parser(
        "demo", help="run the example Deployment and measure pod-to-pod traffic (on a "
        "sandbox without Kubernetes: plug pods by hand through kovn's NB layer)")
    _add_state_dir(demo)
    demo.add_argument("--keep", action="store_true",
                      help="without Kubernetes: leave the demo pods and rows in place")
    demo.set_defaults(func=_guarded(cmd_demo))

    exec_ = actions.add_parser(
        "exec", help="run a command inside a pod's (or the outside's, or a node's) network "
        "namespace",
        description="Run COMMAND inside the network namespace of a pod the sandbox kubelets "
        "run, e.g. `kovn sandbox exec demo/web-1 -- ping -c1 10.16.0.7`; `outside` is the "
        "namespace beyond the gateway routers (198.51.100.1, the internet's client), `node1` "
        "a node's host namespace.")
    _add_state_dir(exec_)
    exec_.add_argument("pod", metavar="NAMESPACE/POD|outside|NODE")
    exec_.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND...")
    exec_.set_defaults(func=_guarded(cmd_exec))

    probe = actions.add_parser(
        "probe", help="connect from a pod (or outside, or a node) to HOST PORT and print what "
        "answered")
    _add_state_dir(probe)
    probe.add_argument("pod", metavar="NAMESPACE/POD|outside|NODE")
    probe.add_argument("host")
    probe.add_argument("port", type=_any_port)
    probe.add_argument("proto", nargs="?", choices=("tcp", "udp"), default="tcp")
    probe.add_argument("--timeout", type=float, default=2.0)
    probe.set_defaults(func=_guarded(cmd_probe))

    restart = actions.add_parser(
        "restart", help="restart a node's agent or kubelet (NODE/agent, NODE/kubelet); pods "
        "keep running; with --ovn-ha start a stopped raft member again (nb1..sb3)")
    _add_state_dir(restart)
    restart.add_argument("daemon", metavar="NODE/agent|NODE/kubelet|MEMBER")
    restart.set_defaults(func=_guarded(cmd_restart))

    down = actions.add_parser("down", help="stop the sandbox and remove all it created")
    _add_state_dir(down)
    down.add_argument("--prefix", default="kovn",
                      help="netns prefix to clean when the state file is gone (default kovn)")
    down.set_defaults(func=_guarded(cmd_down))


def cmd_up(args: argparse.Namespace) -> int:
    try:
        controller = args.kube and args.controller
        config = SandboxConfig(
            state_dir=args.state_dir, nodes=args.nodes, prefix=args.prefix,
            nb_tcp_port=args.nb_tcp_port, ovn_ha=args.ovn_ha, kube=args.kube,
            controller=controller,
            workloads=controller if args.workloads is None else args.workloads,
            apiserver_port=args.apiserver_port, etcd_port=args.etcd_port,
            etcd_peer_port=args.etcd_peer_port, service_accounts=args.service_accounts)
    except ValueError as exc:
        raise SandboxError(str(exc)) from exc
    sandbox = Sandbox(config)
    sandbox.up(progress=_say)
    _say(f"status: kovn sandbox status --state-dir {config.state_dir}")
    if config.kube:
        _say(f"export KUBECONFIG={sandbox.kubeconfig}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = Sandbox(SandboxConfig(state_dir=args.state_dir)).status()
    if args.json:
        print(json.dumps(status, indent=2))
    elif status["state"] == "down":
        print(f"nothing is up in {status['state_dir']} (start it with `kovn sandbox up`)")
    else:
        print(format_status(status))
    return 0 if status["up"] else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from northbound.connection import NorthboundUnavailable
    from sandbox.demo import run_demo

    sandbox = Sandbox.load(args.state_dir)
    if sandbox.config.kube:
        from sandbox.demo_kube import run_kube_demo

        if not sandbox.config.runs_pods:
            raise SandboxError("this sandbox runs no pods (started with --no-workloads): "
                               "start it with the controller, or with --workloads")
        try:
            return run_kube_demo(sandbox, out=_say)
        except (NorthboundUnavailable, TimeoutError) as exc:
            raise SandboxError(f"{exc} (is the sandbox healthy? `kovn sandbox status`)") \
                from exc
    if any(d["name"] == CONTROLLER and d["alive"] for d in sandbox.status()["daemons"]):
        # The demo writes Pod and Subnet rows by hand; the controller would delete them.
        raise SandboxError(
            "the demo writes NB rows that the running kovn controller owns and would remove: "
            "run it on a sandbox started with --no-controller (or --no-kube)")
    try:
        return run_demo(sandbox, out=_say, keep=args.keep)
    except (NorthboundUnavailable, TimeoutError) as exc:
        raise SandboxError(f"{exc} (is the sandbox healthy? `kovn sandbox status`)") from exc


def _pod_netns(args: argparse.Namespace) -> str:
    from sandbox.podruntime import find_record

    namespace, sep, name = args.pod.partition("/")
    sandbox = Sandbox.load(args.state_dir)
    if not sep and args.pod == "outside":
        return sandbox.config.outside_netns
    if not sep and args.pod in {n.name for n in sandbox.nodes}:
        return sandbox.node(args.pod).netns
    if not sep or not namespace or not name:
        raise SandboxError(f"name a pod as NAMESPACE/POD, or `outside`, or a node "
                           f"({', '.join(n.name for n in sandbox.nodes)}); got {args.pod!r}")
    record = find_record(sandbox.kubelet_states(), namespace, name)
    if record is None:
        raise SandboxError(f"no running pod {args.pod} on the nodes of {args.state_dir} "
                           "(`kubectl get pods -o wide` shows where pods run)")
    return record.netns


def cmd_exec(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise SandboxError("say what to run: kovn sandbox exec NAMESPACE/POD -- COMMAND...")
    netns = _pod_netns(args)
    sys.stdout.flush()
    os.execvp("ip", ["ip", "netns", "exec", netns, *command])
    return 1  # not reached


def cmd_probe(args: argparse.Namespace) -> int:
    from sandbox.probe import probe

    answer = probe(_pod_netns(args), args.host, args.port, args.proto, timeout=args.timeout)
    if answer is None:
        print(f"nothing answered on {args.host}:{args.port}/{args.proto} from {args.pod}")
        return 1
    print(answer)
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    daemon = Sandbox.load(args.state_dir).restart(args.daemon)
    _say(f"restarted {daemon.name} (pid {daemon.pid}), log {daemon.log}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    sandbox = Sandbox(SandboxConfig(state_dir=args.state_dir, prefix=args.prefix))
    for line in sandbox.down():
        _say(line)
    _say(f"sandbox down in {time.monotonic() - t0:.1f}s")
    return 0


def format_status(status: dict[str, Any]) -> str:
    """The human view of Sandbox.status()."""
    started = status.get("started_at")
    when = f", started {datetime.fromtimestamp(started):%Y-%m-%d %H:%M:%S}" if started else ""
    lines = [f"sandbox in {status['state_dir']}: {status['state']} "
             f"(prefix {status['prefix']}{when})"]
    tcp = f"  {status['nb_tcp_remote']}" if status.get("nb_tcp_remote") else ""
    lines += [f"  NB  {status['nb_remote']}{tcp}", f"  SB  {status['sb_remote']}"]
    if status.get("ovn_ha"):
        lines.append("  raft (--ovn-ha): " + ", ".join(
            f"{m['name']} {m['role']}" + (f" (term {m['term']})" if m["role"] == "leader" else "")
            for m in status.get("raft", [])))
    lines.append("  daemons:")
    width = max((len(d["name"]) for d in status["daemons"]), default=0)
    for d in status["daemons"]:
        state = "running" if d["alive"] else "stopped"
        crashed = (f"  ({d['crashes']} crash{'es' if d['crashes'] > 1 else ''}, restarted: "
                   "grep EMER in the log)") if d.get("crashes") else ""
        lines.append(f"    {d['name']:<{width}}  {state:<7}  pid {d['pid']:<7}  log {d['log']}"
                     f"{crashed}")
    lines.append("  nodes:")
    for n in status["nodes"]:
        external = f"  external {n['external_ip']}" if n.get("external_ip") else ""
        lines.append(f"    {n['name']}  netns {n['netns']}  underlay {n['underlay_ip']}"
                     f"{external}  ovs {n['ovs_remote']}")
    if status["nodes"]:
        lines.append(f"  outside: netns {status['prefix']}-outside (exec outside -- CMD)")
    if status["blackholes"]:
        lines.append(f"  blackhole routes: {', '.join(status['blackholes'])}")
    if status.get("metrics"):
        lines.append("  metrics (/metrics /healthz /readyz): " + ", ".join(
            f"{name} {url}" for name, url in status["metrics"].items()))
    kube = status.get("kube")
    if kube:
        lines.append(f"  kubernetes: apiserver {kube['apiserver']}, kubeconfig "
                     f"{kube['kubeconfig']}")
        if kube.get("identities"):
            lines.append(f"  kovn identities: {kube['identities']}")
    lines += [
        "  try:",
        f"    kovn show --nb {status['nb_remote']}",
        f"    ovn-sbctl --db={status['sb_remote']} show",
    ]
    if status.get("ovn_ha"):
        lines.append(f"    ovs-appctl -t {status['state_dir']}/nb1.ctl cluster/status "
                     "OVN_Northbound")
    if kube:
        lines += [f"    export KUBECONFIG={kube['kubeconfig']}",
                  f"    {kube_bin_dir() / 'kubectl'} get nodes"]
    return "\n".join(lines)


def _guarded(handler: Handler) -> Handler:
    """Turn the errors a user can act on into one `kovn: ...` line and exit code 1."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except SandboxError as exc:
            print(f"kovn: {exc}", file=sys.stderr)
        except KubeError as exc:  # the sandbox's own API server, from the sandbox's client
            what = f" ({exc.request})" if exc.request else ""
            print(f"kovn: the sandbox's Kubernetes API server{what}: {exc} "
                  "(is the sandbox healthy? `kovn sandbox status`)", file=sys.stderr)
        except OSError as exc:
            print(f"kovn: {exc}", file=sys.stderr)
        return 1

    return run


def _add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", type=Path, default=default_state_dir(),
        help=f"where the sandbox keeps its databases, sockets, pidfiles and logs "
        f"(default ${STATE_DIR_ENV} or /tmp/kovn-sandbox)",
    )


def _tcp_port(value: str) -> int | None:
    if value.lower() in ("0", "none", "off", ""):
        return None
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {value!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def _any_port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {value!r}") from None
    if not 0 <= port < 65536:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _say(line: str) -> None:
    print(line, flush=True)
