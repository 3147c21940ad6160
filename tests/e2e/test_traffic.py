"""Real packets through a topology written by northbound/: pods on two chassis, two switches
joined by the cluster router, an ACL that blocks and unblocks TCP, drift repaired by apply.

The logical rows come from sandbox.demo (the same rows the README's demo prints); everything
asserted here is what a packet did, never what a row says.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from controller.config import ClusterConfig
from controller.subnets import SubnetSpec
from controller.topology import private_acls
from northbound import names
from northbound.connection import NbConnection
from northbound.reconciler import Reconciler
from northbound.rows import ACL, NbRow, Owner, PortGroup
from sandbox.cluster import Sandbox
from sandbox.demo import SERVE_PORT, DemoPod, plug, topology, unplug, wait_ready
from sandbox.pods import TestPod
from sandbox.probe import ping, probe
from sandbox.procs import read_pidfile

pytestmark = pytest.mark.e2e

PODS = [
    DemoPod("red-1", "demo", "ovn-default", "node1", 10),
    DemoPod("red-3", "demo", "ovn-default", "node1", 12),
    DemoPod("blue-1", "demo", "blue", "node1", 10),
    DemoPod("red-2", "demo", "ovn-default", "node2", 11),
    DemoPod("blue-2", "demo", "blue", "node2", 11),
]
POLICY_OWNER = Owner(names.OwnerType.NETWORK_POLICY, "demo/deny-8080")


@dataclass
class Net:
    sandbox: Sandbox
    reconciler: Reconciler
    pods: dict[str, DemoPod]
    plugged: dict[str, TestPod]

    def tcp(self, src: str, dst: str) -> str | None:
        return probe(self.plugged[src].netns, self.pods[dst].ip, SERVE_PORT, timeout=1.0)

    def ping(self, src: str, dst: str) -> bool:
        return ping(self.plugged[src].netns, self.pods[dst].ip)

    def rows(self, *extra: NbRow) -> list[NbRow]:
        return [*topology(PODS), *extra]


def eventually(check: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    """OVN applies NB changes asynchronously (northd, then every ovn-controller): poll."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def net(e2e_sandbox: Sandbox) -> Iterator[Net]:
    with NbConnection(e2e_sandbox.nb_remote) as nb:
        reconciler = Reconciler(nb)
        reconciler.reconcile(topology(PODS))
        plugged: list[TestPod] = []
        try:
            for pod in PODS:
                plugged.append(plug(e2e_sandbox, pod))
            wait_ready(e2e_sandbox, PODS, plugged)
            yield Net(e2e_sandbox, reconciler, {p.name: p for p in PODS},
                      {p.name: t for p, t in zip(PODS, plugged, strict=True)})
        finally:
            unplug(e2e_sandbox, plugged)
            reconciler.reconcile([])


@pytest.mark.parametrize(
    ("src", "dst", "path"),
    [
        ("red-1", "red-3", "same node, same switch"),
        ("red-1", "red-2", "across nodes (Geneve), same switch"),
        ("red-1", "blue-1", "same node, across the router"),
        ("red-1", "blue-2", "across nodes and across the router"),
        ("blue-2", "red-3", "across nodes and across the router, the other way"),
    ],
)
def test_ping_and_tcp(net: Net, src: str, dst: str, path: str) -> None:
    assert net.ping(src, dst), f"ping {src} -> {dst} ({path}) failed"
    answer = net.tcp(src, dst)
    assert answer is not None, f"TCP {src} -> {dst}:{SERVE_PORT} ({path}) got no answer"
    name, client_ip = answer.split()
    assert name == dst
    assert client_ip == net.pods[src].ip, "the server must see the client's own IP (no NAT)"


def test_acl_blocks_then_unblocks_tcp(net: Net) -> None:
    target = net.pods["red-2"]
    group = names.policy_port_group("demo", "deny-8080")
    deny = [
        PortGroup(owner=POLICY_OWNER, name=group, ports=frozenset({target.port_name})),
        ACL(owner=POLICY_OWNER, port_group=group, direction="to-lport", priority=1001,
            match=f"outport == @{group} && tcp.dst == {SERVE_PORT}", action="drop"),
    ]
    assert net.tcp("red-1", "red-2") is not None
    net.reconciler.reconcile(net.rows(*deny))
    try:
        eventually(lambda: net.tcp("red-1", "red-2") is None, what="ACL drop blocks TCP")
        assert net.ping("red-1", "red-2"), "the ACL drops only TCP 8080, ICMP must still pass"
        assert net.tcp("red-1", "red-3") is not None, "the ACL must not touch other pods"
    finally:
        net.reconciler.reconcile(net.rows())
    eventually(lambda: net.tcp("red-1", "red-2") is not None, what="TCP back after ACL removal")


def test_hand_deleted_port_is_restored_by_apply(net: Net) -> None:
    port = net.pods["blue-2"].port_name
    subprocess.run(["ovn-nbctl", f"--db={net.sandbox.nb_remote}", "lsp-del", port], check=True)
    eventually(lambda: net.tcp("red-1", "blue-2") is None, what="traffic stops without the port")
    repaired = net.reconciler.reconcile(net.rows())
    assert [c.row.key for c in repaired.creates] == [port]
    eventually(lambda: net.tcp("red-1", "blue-2") is not None, what="traffic back after repair")


def test_private_subnet_acls_with_real_packets(net: Net) -> None:
    """The controller's ACLs for `private: true` on switch blue: red cannot open connections
    into blue, blue can open them to red (replies come back), blue talks to blue."""
    spec = SubnetSpec(name="blue", cidr="10.17.0.0/16", gateway="10.17.0.1", private=True)
    net.reconciler.reconcile(net.rows(*private_acls(spec, ClusterConfig())))
    try:
        eventually(lambda: net.tcp("red-1", "blue-2") is None, what="red blocked from blue")
        assert net.tcp("red-2", "blue-1") is None
        assert net.tcp("blue-2", "red-1") is not None, "blue's own connections get replies"
        assert net.tcp("blue-1", "blue-2") is not None, "inside the private subnet"
    finally:
        net.reconciler.reconcile(net.rows())
    eventually(lambda: net.tcp("red-1", "blue-2") is not None, what="open again")


def test_a_crashed_vswitchd_is_restarted_and_traffic_resumes(net: Net) -> None:
    """OVS 3.1.0's userspace conntrack can abort on an assertion (conntrack.c:1063); the
    sandbox runs ovs-vswitchd under `--monitor`, as ovs-ctl does, so an abort costs a node
    seconds of traffic, never the rest of the session."""
    node = net.sandbox.node("node2")
    pidfile = node.dir / "vs.pid"
    crashed = read_pidfile(pidfile)
    assert crashed is not None and net.tcp("red-1", "red-2") is not None
    os.kill(crashed, signal.SIGABRT)
    eventually(lambda: read_pidfile(pidfile) not in (None, crashed), timeout=10,
               what="the monitor restarts ovs-vswitchd")
    eventually(lambda: net.tcp("red-1", "red-2") is not None, timeout=15,
               what="traffic across nodes resumes")
    assert net.tcp("blue-2", "red-3") is not None
