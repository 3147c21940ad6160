"""Test "pods": a netns with an eth0 whose veth peer is bound to a node's br-int.

This is what a CNI plugin would do for a real pod, reduced to the part OVN cares about: the
OVS interface's external_ids:iface-id names the logical switch port, and ovn-controller then
binds it and sets external_ids:ovn-installed=true once its flows are in.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from contract import defaults
from sandbox.cluster import Sandbox
from sandbox.errors import SandboxError, SandboxTimeout
from sandbox.netns import ip, netns_add, netns_delete, netns_exec, veth
from sandbox.node import SandboxNode, vsctl
from sandbox.procs import run

__all__ = [
    "PodSpec",
    "TestPod",
    "add_pod",
    "host_if_name",
    "netns_exec",
    "remove_pod",
    "wait_ovn_installed",
]

IFNAMSIZ = 15  # Linux interface names are at most 15 characters


@dataclass(frozen=True)
class PodSpec:
    """The pod's side of the contract: its port's addresses and the logical port to bind."""

    name: str
    mac: str
    ip_cidr: str  # "10.16.0.11/16"
    gateway: str  # "10.16.0.1"
    iface_id: str  # logical switch port name
    mtu: int = defaults.DEFAULT_MTU  # Geneve adds its header; 1500 loses large TCP segments


@dataclass(frozen=True)
class TestPod:
    """A pod that exists on a node; hand it to remove_pod when done."""

    __test__ = False  # not a pytest test class, despite its name

    spec: PodSpec
    node: SandboxNode
    netns: str
    host_if: str


def host_if_name(pod_name: str) -> str:
    """The host-side veth name: `v-<name>`, or a hashed form when that exceeds 15 chars."""
    name = f"v-{pod_name}"
    if len(name) <= IFNAMSIZ:
        return name
    digest = hashlib.sha1(pod_name.encode()).hexdigest()[:6]
    return f"v-{pod_name[:6]}-{digest}"


def add_pod(sandbox: Sandbox, node: SandboxNode, spec: PodSpec) -> TestPod:
    """Create the pod netns and its veth, and plug the host end into the node's br-int."""
    pod = TestPod(
        spec=spec,
        node=node,
        netns=f"{sandbox.config.pod_netns_prefix}{spec.name}",
        host_if=host_if_name(spec.name),
    )
    netns_add(pod.netns)
    try:
        veth(pod.host_if, node.netns, "eth0", pod.netns, mtu=spec.mtu)
        ip("link", "set", "eth0", "address", spec.mac, netns=pod.netns)
        ip("addr", "add", spec.ip_cidr, "dev", "eth0", netns=pod.netns)
        ip("route", "add", "default", "via", spec.gateway, netns=pod.netns)
        vsctl(node, "add-port", "br-int", pod.host_if, "--", "set", "interface", pod.host_if,
              f"external_ids:iface-id={spec.iface_id}")
    except BaseException:
        remove_pod(sandbox, pod)
        raise
    return pod


def remove_pod(sandbox: Sandbox, pod: TestPod) -> None:
    """Unplug and delete the pod; safe to call twice or for a half-created pod."""
    if (pod.node.dir / "db.sock").exists():
        run(["ovs-vsctl", f"--db={pod.node.ovs_remote}", "--timeout=10", "--if-exists",
             "del-port", "br-int", pod.host_if], check=False)
    netns_delete(pod.netns)


def wait_ovn_installed(node: SandboxNode, iface_id: str, timeout: float = 30) -> None:
    """Wait until ovn-controller on `node` has installed the flows of port `iface_id`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            names = vsctl(node, "--bare", "--columns=name", "find", "Interface",
                          f'external_ids:iface-id="{iface_id}"',
                          'external_ids:ovn-installed="true"').split()
        except SandboxError:
            names = []
        if names:
            return
        if time.monotonic() > deadline:
            raise SandboxTimeout(
                f"port {iface_id} not ovn-installed on {node.name} after {timeout:.0f}s: does "
                f"the logical switch port {iface_id!r} exist in the NB, and is an interface "
                f"with iface-id={iface_id} on br-int? See {node.dir / 'ovnc.log'}")
        time.sleep(0.1)
