"""The sandbox's "outside": the network beyond the nodes' gateway routers, and a client on it.

    <prefix>-outside netns: bridge br0 198.51.100.1/24 (the internet's router and client)
         │ veth <node> ── ext0 in the node's netns, a port of its OVS bridge br-ex
         │ (ovn-bridge-mappings=physnet:br-ex: the localnet port of ext_<node>)
    GR_<node> owns 198.51.100.1N/24 on it (N = the node's index), next hop 198.51.100.1

Every node gets a second interface on this network, as in ../shared/sandbox-recipe.sh. The
node's own netns has no address on it: the gateway router owns the node's external IP, so
what the outside sees from a node is what OVN sent. The node agent is told the address
(`--external-ip`, `--external-gateway`) and publishes it on the Node. A small server in the
outside netns answers TCP and UDP on port 80 (HTTP too) with `outside <client ip>`, so a
probe from a pod shows the source the outside saw: the node's external IP for a natOutgoing
Subnet, the pod's own IP for a routed one. For the routed ones the outside routes the
private ranges back into the cluster through every node's gateway (multipath), as an
upstream router with routes to the pod ranges would. Like every sandbox range, the outside
network is blackholed in the root namespace while the sandbox is up.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

from sandbox import procs
from sandbox.config import SandboxConfig
from sandbox.errors import SandboxTimeout
from sandbox.kube import REPO, python_env
from sandbox.netns import ip, netns_add, netns_exec, veth
from sandbox.node import SandboxNode, vsctl

BRIDGE = "br0"
NODE_UPLINK = "ext0"
"""The node's end of its outside veth, inside the node netns, a port of EXTERNAL_BRIDGE."""
EXTERNAL_BRIDGE = "br-ex"
SERVER_PORT = 80
ROUTED_BACK = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
"""Where pods of non-NAT Subnets live: the outside sends these back through the nodes."""
SERVER = "outside/server"


def create_outside(config: SandboxConfig) -> None:
    """The outside netns and its bridge, holding the external network's router address."""
    ns = config.outside_netns
    netns_add(ns)
    ip("link", "add", BRIDGE, "type", "bridge", netns=ns)
    ip("addr", "add", f"{config.outside_gateway}/{config.outside_prefixlen}", "dev", BRIDGE,
       netns=ns)
    ip("link", "set", BRIDGE, "up", netns=ns)


def plug_node(config: SandboxConfig, node: SandboxNode) -> None:
    """The node's second interface: a veth from its br-ex to the outside bridge."""
    veth(node.name, config.outside_netns, NODE_UPLINK, node.netns)
    ip("link", "set", node.name, "master", BRIDGE, netns=config.outside_netns)
    vsctl(node, "add-br", EXTERNAL_BRIDGE, "--", "set", "bridge", EXTERNAL_BRIDGE,
          "datapath_type=netdev", "--", "add-port", EXTERNAL_BRIDGE, NODE_UPLINK)


def route_back(config: SandboxConfig, nodes: Sequence[SandboxNode]) -> None:
    """Routes for the private ranges via every node's external IP (Linux multipath)."""
    hops = [arg for n in nodes for arg in ("nexthop", "via", n.external_ip)]
    for cidr in ROUTED_BACK:
        ip("route", "replace", cidr, *hops, netns=config.outside_netns)


def start_server(config: SandboxConfig, record: Callable[[procs.Daemon], None]) -> None:
    """`outside <client ip>` on TCP and UDP port 80 of the outside's address."""
    d = config.state_dir
    pidfile = d / "outside-server.pid"
    argv = [sys.executable, "-m", "sandbox.serve_hostname", f"--pidfile={pidfile}",
            "--name", "outside", "--tcp", str(SERVER_PORT), "--udp", str(SERVER_PORT),
            "--bind", config.outside_gateway]
    record(procs.spawn_daemon(SERVER, argv, pidfile=pidfile, log=d / "outside-server.log",
                              env=python_env(), cwd=REPO, netns=config.outside_netns))


def agent_args(config: SandboxConfig, node: SandboxNode) -> list[str]:
    """The node agent's flags for its external network."""
    return ["--external-ip", f"{node.external_ip}/{config.outside_prefixlen}",
            "--external-gateway", config.outside_gateway, "--external-bridge", EXTERNAL_BRIDGE]


def describe(config: SandboxConfig, nodes: Sequence[SandboxNode]) -> str:
    return (f"outside: netns {config.outside_netns}, {config.outside_gateway}/"
            f"{config.outside_prefixlen} (server on port {SERVER_PORT}), gateway routers at "
            f"{', '.join(n.external_ip for n in nodes)}")


def wait_gateways(config: SandboxConfig, nodes: Sequence[SandboxNode],
                  timeout: float = 60) -> str:
    """Wait until every node's gateway router answers ping from the outside (the controller
    built it from the Node's annotations, ovn-controller bound it and its localnet port);
    say how long it took. It also fills each GR's neighbour table with the outside's MAC."""
    started = time.monotonic()
    for node in nodes:
        while netns_exec(config.outside_netns, ["ping", "-c1", "-W1", "-n",
                                                node.external_ip]).returncode != 0:
            if time.monotonic() - started > timeout:
                raise SandboxTimeout(
                    f"GR_{node.name} does not answer at {node.external_ip} from the outside "
                    f"after {timeout:.0f}s; see {config.state_dir / 'controller.log'} and "
                    f"{node.dir / 'agent.log'}")
    return (f"gateways: {', '.join(f'GR_{n.name} {n.external_ip}' for n in nodes)} answer "
            f"from the outside ({time.monotonic() - started:.1f}s after the agents)")
