"""A sandbox node: a netns with its own ovsdb-server, ovs-vswitchd (userspace datapath) and
ovn-controller, attached to the shared underlay.

The underlay is a Linux bridge in its own netns with one veth per node, so N nodes need N
links instead of a full mesh. Each node plugs its end into a netdev bridge `br-phy` whose
internal port carries the node's underlay address: the userspace datapath can only send
Geneve through a bridge it owns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox.config import SandboxConfig
from sandbox.errors import SandboxError, SandboxTimeout
from sandbox.netns import ip, netns_add, netns_exec, veth
from sandbox.procs import Daemon, run, start_daemon

VSWITCH_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
UNDERLAY_BRIDGE = "br0"
UPLINK = "uplink"  # the node's end of its underlay veth, inside the node netns


@dataclass(frozen=True)
class SandboxNode:
    """One node as other code sees it: where its OVS lives and how to reach it."""

    name: str  # "node1"; also the OVN chassis name (external_ids:system-id)
    netns: str  # "kovn-node1"
    dir: Path  # state_dir/"node1": its db, sockets, pidfiles, logs and OVS run dir
    ovs_remote: str  # "unix:<dir>/db.sock"
    underlay_ip: str  # "203.0.113.11"
    external_ip: str = ""  # "198.51.100.11": its gateway router's, on the outside network


def make_node(config: SandboxConfig, index: int) -> SandboxNode:
    """The node with 1-based `index`; pure, so a loaded sandbox rebuilds the same nodes."""
    name = config.node_name(index)
    node_dir = config.state_dir / name
    return SandboxNode(
        name=name,
        netns=config.node_netns(index),
        dir=node_dir,
        ovs_remote=f"unix:{node_dir / 'db.sock'}",
        underlay_ip=config.underlay_ip(index),
        external_ip=config.external_ip(index),
    )


def vsctl(node: SandboxNode, *args: str) -> str:
    """`ovs-vsctl` against the node's own database; returns stdout."""
    return run(["ovs-vsctl", f"--db={node.ovs_remote}", "--timeout=30", *args]).stdout


def node_env(node: SandboxNode) -> dict[str, str]:
    """Per-node run dirs: without them daemons of different nodes collide in /var/run.

    ovn-controller also finds the vswitchd's OpenFlow socket (br-int.mgmt) via OVS_RUNDIR.
    """
    d = str(node.dir)
    return {"OVS_RUNDIR": d, "OVN_RUNDIR": d, "OVS_LOGDIR": d, "OVS_DBDIR": d}


def create_underlay(config: SandboxConfig) -> None:
    """The underlay netns holding the Linux bridge every node's uplink attaches to."""
    ns = config.underlay_netns
    netns_add(ns)
    ip("link", "add", UNDERLAY_BRIDGE, "type", "bridge", netns=ns)
    ip("link", "set", UNDERLAY_BRIDGE, "up", netns=ns)


def start_node(
    config: SandboxConfig, node: SandboxNode, sb_remote: str, record: Callable[[Daemon], None]
) -> None:
    """Create the node netns, plug it into the underlay, start its daemons (each `record`ed)."""
    netns_add(node.netns)
    veth(node.name, config.underlay_netns, UPLINK, node.netns)
    ip("link", "set", node.name, "master", UNDERLAY_BRIDGE, netns=config.underlay_netns)

    d, env = node.dir, node_env(node)
    d.mkdir(parents=True, exist_ok=True)
    run(["ovsdb-tool", "create", str(d / "conf.db"), str(VSWITCH_SCHEMA)])
    record(start_daemon(
        f"{node.name}/ovsdb-server", "ovsdb-server",
        [f"--remote=punix:{d / 'db.sock'}", str(d / "conf.db")],
        pidfile=d / "db.pid", log=d / "db.log", unixctl=d / "db.ctl", env=env, netns=node.netns,
    ))
    vsctl(node, "--no-wait", "init")
    record(start_daemon(
        f"{node.name}/ovs-vswitchd", "ovs-vswitchd", [node.ovs_remote],
        pidfile=d / "vs.pid", log=d / "vs.log", unixctl=d / "vs.ctl", env=env, netns=node.netns,
        monitor=True,  # OVS 3.1's userspace conntrack can abort on an assertion: restart it
    ))
    vsctl(node, "add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev",
          "--", "add-port", "br-phy", UPLINK)
    ip("addr", "replace", f"{node.underlay_ip}/{config.underlay_prefixlen}", "dev", "br-phy",
       netns=node.netns)
    ip("link", "set", "br-phy", "up", netns=node.netns)
    vsctl(node, "set", "open", ".",
          f"external_ids:system-id={node.name}",
          f"external_ids:ovn-remote={sb_remote}",
          "external_ids:ovn-encap-type=geneve",
          f"external_ids:ovn-encap-ip={node.underlay_ip}",
          "external_ids:ovn-bridge-datapath-type=netdev")
    vsctl(node, "add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev",
          "fail-mode=secure")
    record(start_daemon(
        f"{node.name}/ovn-controller", "ovn-controller", [node.ovs_remote],
        # ovn-controller has no --unixctl: its control socket goes to OVN_RUNDIR (the node dir).
        pidfile=d / "ovnc.pid", log=d / "ovnc.log", env=env, netns=node.netns,
    ))


def wait_tunnels(nodes: Sequence[SandboxNode], timeout: float = 30) -> None:
    """Wait until each node's ovn-controller has a Geneve port to every other node."""
    deadline = time.monotonic() + timeout
    for node in nodes:
        while len(vsctl(node, "--bare", "--columns=name", "find", "Interface",
                        "type=geneve").split()) < len(nodes) - 1:
            if time.monotonic() > deadline:
                raise SandboxTimeout(
                    f"{node.name} has no Geneve tunnels to all other nodes after {timeout:.0f}s; "
                    f"see {node.dir / 'ovnc.log'}")
            time.sleep(0.05)


def warm_underlay(nodes: Sequence[SandboxNode]) -> None:
    """Ping every other node's underlay address from every node; fail if one is unreachable.

    Besides checking the underlay, this fills ovs-vswitchd's tunnel neighbour cache, or the
    first Geneve packet to each node is dropped while the userspace datapath resolves the
    address (a pod's first ping is lost). vswitchd learns by snooping ARP replies on br-phy,
    but only once a tunnel port exists (call wait_tunnels first) and only if the kernel
    actually sends an ARP request, hence the flush.
    """
    for src in nodes:
        ip("neigh", "flush", "dev", "br-phy", netns=src.netns)
        for dst in nodes:
            if src is dst:
                continue
            argv = ["ping", "-c1", "-W2", dst.underlay_ip]
            if all(netns_exec(src.netns, argv).returncode != 0 for _ in range(2)):
                raise SandboxError(
                    f"underlay broken: {src.name} cannot ping {dst.name} at {dst.underlay_ip}; "
                    f"see {src.dir / 'vs.log'}")
