"""What makes pods really run in the sandbox: per node a kovn node agent (`kovn node`, in the
node's netns), a sandbox kubelet and the relay that makes the API server reachable from pods
as the `kubernetes` Service (sandbox.apirelay), plus the CNI configuration a runtime would read;
and once per sandbox the cloud that gives LoadBalancer Services their address (sandbox.lbpool,
log lbpool.log in the state dir).

Files per node, in its directory D: cni/net.d/10-kovn.conflist, cni/bin/kovn-cni (this
checkout's node/cni_shim.c compiled) and kovn-cni-py (the Python shim, node/cni_plugin.py,
which the compiled one hands its rare cases to), cni.sock (the agent's), kubelet/ (pod
records, ADD log), agent.log, kubelet.log, apirelay.log. The API server listens on the
machine's loopback, which a node
netns does not have: agents reach it through `--kube-netns <prefix>-host`, a name the
sandbox gives to the root network namespace (`ip netns attach`; /proc/1/ns/net is not always
readable).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from controller.config import ClusterConfig
from kube.client import KubeClient
from node import cni_shim
from sandbox import apirelay, identities, metrics, outside, procs
from sandbox.config import SandboxConfig
from sandbox.errors import SandboxError, SandboxTimeout
from sandbox.kube import REPO, kubeconfig, python_env
from sandbox.netns import ip, netns_delete
from sandbox.node import SandboxNode

PLUGIN = "kovn-cni"
CONF_NAME = "10-kovn.conflist"
MGMT_PORT = "ovn0"
Record = Callable[[procs.Daemon], None]


def agent_socket(node: SandboxNode) -> Path:
    return node.dir / "cni.sock"


def cni_conf(node: SandboxNode) -> Path:
    return node.dir / "cni" / "net.d" / CONF_NAME


def cni_bin(node: SandboxNode) -> Path:
    return node.dir / "cni" / "bin"


def kubelet_state(node: SandboxNode) -> Path:
    return node.dir / "kubelet"


def plugin_python() -> str:
    """The interpreter of the `kovn-cni` launcher: the real binary behind this Python (the
    shim imports only CPython's built-in modules, so no venv or pyenv shim is needed)."""
    return os.path.realpath(sys.executable)


def why_no_workloads() -> str | None:
    """What is missing to run pods: nothing any more, the CNI plugin is written from this
    checkout (node.cni_shim.install); kept for the callers that ask."""
    return None


def write_cni_files(node: SandboxNode) -> None:
    conf = {"cniVersion": "1.1.0", "name": "kovn",
            "plugins": [{"type": PLUGIN, "socket": str(agent_socket(node))}]}
    cni_conf(node).parent.mkdir(parents=True, exist_ok=True)
    cni_conf(node).write_text(json.dumps(conf, indent=2) + "\n")
    problem = cni_shim.install(cni_bin(node), plugin_python(), REPO / ".cache" / "cni-shim")
    if problem is not None:
        print(f"  warning: {node.name}: kovn-cni is the Python shim alone ({problem}); each "
              "ADD and DEL then costs ~18 ms more CPU", file=sys.stderr, flush=True)


def agent_argv(config: SandboxConfig, node: SandboxNode, sb_remote: str) -> list[str]:
    """`kovn node` for this node (run inside the node's netns)."""
    return [sys.executable, "-m", "cli.main", "node", "--node", node.name,
            "--kubeconfig", str(identities.kubeconfig_for(config, identities.NODE_SA)),
            "--ovs-db", node.ovs_remote,
            "--sb-remote", sb_remote, "--encap-ip", node.underlay_ip,
            "--datapath-type", "netdev", "--socket", str(agent_socket(node)),
            "--kube-netns", config.host_netns, *outside.agent_args(config, node)]


def start_agent(config: SandboxConfig, node: SandboxNode, sb_remote: str,
                record: Record) -> procs.Daemon:
    daemon = procs.spawn_daemon(
        f"{node.name}/agent", [*agent_argv(config, node, sb_remote),
                               *metrics.agent_args(config, node.name)],
        pidfile=node.dir / "agent.pid", log=node.dir / "agent.log",
        match=(str(agent_socket(node)),), env=python_env(), cwd=REPO, netns=node.netns)
    record(daemon)
    return daemon


def start_kubelet(config: SandboxConfig, node: SandboxNode, record: Record) -> None:
    pidfile = node.dir / "kubelet.pid"
    argv = [sys.executable, "-m", "sandbox.kubelet", f"--pidfile={pidfile}",
            "--node", node.name, "--node-ip", node.underlay_ip, "--node-netns", node.netns,
            "--kubeconfig", str(kubeconfig(config)), "--cni-conf", str(cni_conf(node)),
            "--cni-bin", str(cni_bin(node)), "--state", str(kubelet_state(node)),
            "--prefix", config.prefix, "--dns-ip", ClusterConfig().dns_ip]
    record(procs.spawn_daemon(f"{node.name}/kubelet", argv, pidfile=pidfile,
                              log=node.dir / "kubelet.log", env=python_env(), cwd=REPO))


def start_relay(config: SandboxConfig, node: SandboxNode, record: Record) -> None:
    """The node's relay to the API server, which pods reach as the `kubernetes` Service
    (sandbox.apirelay); it runs in the root netns and listens in the node's."""
    pidfile = node.dir / "apirelay.pid"
    argv = [sys.executable, "-m", "sandbox.apirelay", f"--pidfile={pidfile}",
            "--node", node.name, "--node-netns", node.netns,
            "--kubeconfig", str(kubeconfig(config))]
    record(procs.spawn_daemon(f"{node.name}/apirelay", argv, pidfile=pidfile,
                              log=node.dir / "apirelay.log", env=python_env(), cwd=REPO))


def start_lbpool(config: SandboxConfig, record: Record) -> None:
    """The sandbox's cloud: addresses for Services of type LoadBalancer (sandbox.lbpool)."""
    pidfile = config.state_dir / "lbpool.pid"
    argv = [sys.executable, "-m", "sandbox.lbpool", f"--pidfile={pidfile}",
            "--kubeconfig", str(kubeconfig(config))]
    record(procs.spawn_daemon("lbpool", argv, pidfile=pidfile,
                              log=config.state_dir / "lbpool.log", env=python_env(), cwd=REPO))


def name_host_netns(config: SandboxConfig) -> None:
    """`/run/netns/<prefix>-host`: the root netns (ours), for agents to reach the API server."""
    netns_delete(config.host_netns)  # a leftover name; deleting a name never deletes the root
    ip("netns", "attach", config.host_netns, str(os.getpid()))


def start_workloads(config: SandboxConfig, nodes: list[SandboxNode], sb_remote: str,
                    record: Record) -> list[str]:
    """Start every node's kubelet and agent; the logs to read if the nodes stall."""
    name_host_netns(config)
    for node in nodes:
        write_cni_files(node)
        start_kubelet(config, node, record)
        start_agent(config, node, sb_remote, record)
        start_relay(config, node, record)
    start_lbpool(config, record)
    return [str(n.dir / "kubelet.log") for n in nodes]


def agent_ready(node: SandboxNode) -> bool:
    """The agent serves CNI and its management port ovn0 has its join address."""
    if not agent_socket(node).exists():
        return False
    out = ip("-4", "-o", "addr", "show", "dev", MGMT_PORT, netns=node.netns, check=False)
    return " inet " in out


def wait_agents(nodes: Iterable[SandboxNode], daemons: Iterable[procs.Daemon],
                timeout: float = 60) -> None:
    """Wait until every node's agent serves CNI and has its management port; fail early if
    an agent exits."""
    watched = [d for d in daemons if d.name.endswith("/agent")]
    deadline = time.monotonic() + timeout
    for node in nodes:
        while not agent_ready(node):
            for daemon in watched:
                if procs.live_pid(daemon) is None:
                    raise SandboxError(f"{daemon.name} exited; see {daemon.log}")
            if time.monotonic() > deadline:
                raise SandboxTimeout(
                    f"{node.name}'s agent does not serve {agent_socket(node)} with {MGMT_PORT} "
                    f"up after {timeout:.0f}s; see {node.dir / 'agent.log'}")
            time.sleep(0.1)


def wait_relays(config: SandboxConfig, nodes: Iterable[SandboxNode],
                daemons: Iterable[procs.Daemon], timeout: float = 30) -> str:
    """Wait until every node's relay has published its join address as an endpoint of
    `default/kubernetes` (it needs the node's kovn.io/node-network); a line saying so."""
    watched = [d for d in daemons if d.name.endswith("/apirelay")]
    logs = {n.name: n.dir / "apirelay.log" for n in nodes}
    names = list(logs)
    api = KubeClient(kubeconfig(config), pool_size=1, timeout=5)
    deadline = time.monotonic() + timeout
    try:
        while True:
            found = {e.get("nodeName"): e["addresses"][0]
                     for e in (api.get_or_none(apirelay.SLICE_PATH) or {}).get("endpoints") or ()
                     if e.get("addresses")}
            if set(names) <= found.keys():
                ip = api.get(apirelay.SERVICE_PATH)["spec"]["clusterIP"]
                return (f"kube: Service default/kubernetes {ip}:443 -> " + ", ".join(
                    f"{found[n]}:{apirelay.RELAY_PORT}" for n in names) +
                    " (each node's API relay, on its ovn0)")
            for daemon in watched:
                if procs.live_pid(daemon) is None:
                    raise SandboxError(f"{daemon.name} exited; see {daemon.log}")
            if time.monotonic() > deadline:
                missing = [n for n in names if n not in found]
                raise SandboxTimeout(
                    f"the API relays of {', '.join(missing)} published no endpoint of "
                    f"default/kubernetes after {timeout:.0f}s; see {logs[missing[0]]}")
            time.sleep(0.1)
    finally:
        api.close()
