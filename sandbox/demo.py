"""The Foundation demo: a logical topology written through northbound/, real pods, real packets.

Two subnet switches (`ovn-default` 10.16.0.0/16 and `blue` 10.17.0.0/16) hang off the
cluster router `ovn-cluster`; one pod of each subnet on each node. Every pod serves its name on
TCP 8080; the demo then measures which pod reaches which (ping and TCP) and prints the matrix.
Later issues replace the hand-written rows with the controller's translation of Kubernetes
objects; the wiring (rows -> reconcile -> ovn-controller binds -> packets flow) stays.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from contract import defaults
from contract.podnetwork import mac_from_ip
from controller import topology as controller_topology
from controller.config import ClusterConfig
from controller.subnets import SubnetSpec
from northbound import names
from northbound.rows import NbRow, Owner
from sandbox.cluster import Sandbox
from sandbox.pods import PodSpec, TestPod, add_pod, remove_pod, wait_ovn_installed
from sandbox.probe import ping, probe

SERVE_PORT = 8080
SUBNETS: dict[str, str] = {names.DEFAULT_SUBNET: defaults.POD_CIDR, "blue": "10.17.0.0/16"}


@dataclass(frozen=True)
class DemoPod:
    name: str
    namespace: str
    subnet: str
    node: str
    index: int  # host part of the pod's IP inside its subnet

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_network(SUBNETS[self.subnet])[self.index])

    @property
    def port_name(self) -> str:
        return names.pod_port(self.namespace, self.name)

    @property
    def owner(self) -> Owner:
        return Owner(names.OwnerType.POD, f"{self.namespace}/{self.name}")


def mac_for(ip: str) -> str:
    return mac_from_ip(ip)


def gateway_of(subnet: str) -> str:
    return str(ipaddress.ip_network(SUBNETS[subnet])[1])


def subnet_spec(subnet: str) -> SubnetSpec:
    return SubnetSpec(name=subnet, cidr=SUBNETS[subnet], gateway=gateway_of(subnet))


def topology(pods: Iterable[DemoPod]) -> list[NbRow]:
    """Every row of the demo, built by the controller's own translation: cluster router,
    join switch and LB group, the two subnets, and the pod ports."""
    config = ClusterConfig()
    rows: list[NbRow] = list(controller_topology.cluster_rows(config))
    for subnet in SUBNETS:
        rows += controller_topology.subnet_rows(subnet_spec(subnet), config)
    for pod in pods:
        network = controller_topology.pod_network(f"{pod.namespace}/{pod.name}", pod.ip, None,
                                                  subnet_spec(pod.subnet), config)
        # These pods are plugged by hand, with no pod UID to match: no iface-id-ver pinning.
        rows += [dataclasses.replace(row, options={"requested-chassis": pod.node})
                 for row in controller_topology.pod_rows(f"{pod.namespace}/{pod.name}",
                                                         network, pod.node, uid="")]
    return rows


def default_pods(nodes: list[str]) -> list[DemoPod]:
    """One pod per subnet per node."""
    pods = []
    for i, node in enumerate(nodes):
        for subnet in SUBNETS:
            color = "red" if subnet == "ovn-default" else "blue"
            pods.append(DemoPod(f"{color}-{i + 1}", "demo", subnet, node, 10 + i))
    return pods


def plug(sandbox: Sandbox, pod: DemoPod) -> TestPod:
    """Create the pod's netns + veth on its node and start its server."""
    spec = PodSpec(name=pod.name, mac=mac_for(pod.ip),
                   ip_cidr=f"{pod.ip}/{ipaddress.ip_network(SUBNETS[pod.subnet]).prefixlen}",
                   gateway=gateway_of(pod.subnet), iface_id=pod.port_name)
    test_pod = add_pod(sandbox, sandbox.node(pod.node), spec)
    subprocess.Popen(
        ["ip", "netns", "exec", test_pod.netns, sys.executable, "-m", "sandbox.serve_hostname",
         "--name", pod.name, "--tcp", str(SERVE_PORT)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    return test_pod


def wait_ready(sandbox: Sandbox, pods: list[DemoPod], plugged: list[TestPod],
               timeout: float = 30) -> None:
    """Ports bound by ovn-controller and servers listening."""
    for pod in pods:
        wait_ovn_installed(sandbox.node(pod.node), pod.port_name, timeout)
    deadline = time.monotonic() + timeout
    for pod, test_pod in zip(pods, plugged, strict=True):
        while probe(test_pod.netns, pod.ip, SERVE_PORT, timeout=0.5) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"server of {pod.name} not answering on {pod.ip}:{SERVE_PORT}")
            time.sleep(0.1)


def unplug(sandbox: Sandbox, plugged: Iterable[TestPod]) -> None:
    for test_pod in plugged:
        pids = subprocess.run(["ip", "netns", "pids", test_pod.netns], capture_output=True,
                              text=True, check=False).stdout.split()
        for pid in pids:
            subprocess.run(["kill", pid], check=False)
        remove_pod(sandbox, test_pod)


@dataclass(frozen=True)
class Reach:
    src: str
    dst: str
    ping: bool
    tcp: str | None  # what answered, e.g. "red-2 10.16.0.10"


def matrix(pods: list[DemoPod], plugged: list[TestPod]) -> list[Reach]:
    """Ping and TCP from every pod to every other pod, in parallel."""
    netns = {p.name: t.netns for p, t in zip(pods, plugged, strict=True)}

    def one(pair: tuple[DemoPod, DemoPod]) -> Reach:
        src, dst = pair
        return Reach(src.name, dst.name, ping(netns[src.name], dst.ip),
                     probe(netns[src.name], dst.ip, SERVE_PORT))

    pairs = [(s, d) for s in pods for d in pods if s is not d]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, pairs))


def format_matrix(pods: list[DemoPod], results: list[Reach]) -> str:
    by_pair = {(r.src, r.dst): r for r in results}
    width = max(len(p.name) for p in pods) + 2
    lines = ["from \\ to".ljust(width + 4) + "".join(p.name.ljust(width + 4) for p in pods)]
    for src in pods:
        cells = []
        for dst in pods:
            if src is dst:
                cells.append("-".ljust(width + 4))
                continue
            r = by_pair[(src.name, dst.name)]
            cell = ("ping " if r.ping else "---- ") + ("tcp" if r.tcp else "---")
            cells.append(cell.ljust(width + 4))
        lines.append(src.name.ljust(width + 4) + "".join(cells))
    return "\n".join(lines)


def run_demo(sandbox: Sandbox, out: Callable[[str], None] = print, keep: bool = False) -> int:
    """Build the topology, plug pods, measure the matrix, print `kovn show`; 0 if all reach."""
    from northbound.connection import NbConnection
    from northbound.reconciler import Reconciler
    from northbound.show import show_text

    pods = default_pods([n.name for n in sandbox.nodes])
    with NbConnection(sandbox.nb_remote) as nb:
        reconciler = Reconciler(nb)
        applied = reconciler.reconcile(topology(pods), what="demo topology")
        out(f"NB: {applied.summary()} (one transaction)")
        plugged: list[TestPod] = []
        try:
            for pod in pods:
                plugged.append(plug(sandbox, pod))
                out(f"pod {pod.name:8} {pod.ip:12} on {pod.node} (switch {pod.subnet})")
            wait_ready(sandbox, pods, plugged)
            started = time.monotonic()
            results = matrix(pods, plugged)
            out(f"\nconnectivity, measured with real packets in "
                f"{time.monotonic() - started:.1f}s (ping = ICMP echo, tcp = pod's server "
                f"answered on :{SERVE_PORT}):")
            out(format_matrix(pods, results))
            out("\nkovn show:\n" + show_text(nb))
        finally:
            if not keep:
                unplug(sandbox, plugged)
                reconciler.reconcile([], what="demo cleanup")
    failures = [r for r in results if not (r.ping and r.tcp)]
    out(f"\n{len(results) - len(failures)}/{len(results)} pod pairs reach each other")
    return 0 if not failures else 1
