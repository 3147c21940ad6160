"""`kovn node` and `kovn-cni` on the real 2-node sandbox, with a real `kovn controller`.

The test plays the container runtime: it creates pods bound to a node (spec.nodeName), makes
their netns, and runs `kovn-cni` inside the node's netns with CNI_* env and the network config
on stdin, as a runtime would. Connectivity is proven with real packets.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from contract.podnetwork import NODE_NETWORK, NodeNetwork, PodNetwork
from node.netns import in_netns
from node.plumbing import host_veth_name
from sandbox.cluster import Sandbox
from sandbox.controlplane import ControllerProcess, eventually, pod_manifest
from sandbox.netns import ip, netns_add, netns_delete, netns_exec
from sandbox.node import SandboxNode, vsctl
from sandbox.probe import ping, probe
from tests.e2e.controlplane import REPO, Cluster
from tests.integration.test_cni_plugin import plugin_binary

pytestmark = pytest.mark.e2e
NAMESPACE = "t-cni"
# This checkout's plugin, as the sandbox installs it (node.cni_plugin.launcher).
KOVN_CNI = plugin_binary()


class AgentProcess:
    """`kovn node` for one sandbox node, inside the node's netns, as the sandbox runs it."""

    def __init__(self, sandbox: Sandbox, node: SandboxNode, workdir: Path) -> None:
        self.node = node
        self.socket = str(workdir / f"{node.name}-cni.sock")
        self.log = workdir / f"{node.name}-agent.log"
        # The sandbox's API server listens on the root netns' loopback: talk to it from ours.
        self.argv = ["ip", "netns", "exec", node.netns, sys.executable, "-m", "cli.main",
                     "node", "--node", node.name, "--kubeconfig", str(sandbox.kubeconfig),
                     "--ovs-db", node.ovs_remote, "--sb-remote", sandbox.sb_remote,
                     "--encap-ip", node.underlay_ip, "--datapath-type", "netdev",
                     "--socket", self.socket, "--annotation-timeout", "20",
                     "--kube-netns", f"/proc/{os.getpid()}/ns/net"]
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0

    def start(self) -> None:
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=REPO, stdout=out, stderr=out)
        eventually(lambda: (b" ready: serving CNI" in self.log.read_bytes()[self._offset:]
                            and Path(self.socket).exists()) or self.proc.poll() is not None,
                   30, f"agent on {self.node.name} ready (see {self.log})")
        assert self.proc.poll() is None, f"agent exited: {self.log.read_text()[-2000:]}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert not Path(self.socket).exists(), "a stopped agent removes its socket"

    def text(self) -> str:
        return self.log.read_text()

    def since_start(self) -> str:
        return self.log.read_bytes()[self._offset:].decode(errors="replace")


@dataclass
class Pod:
    name: str
    node: SandboxNode
    netns: str
    container_id: str
    uid: str = ""
    result: dict[str, Any] | None = None

    @property
    def ip(self) -> str:
        assert self.result is not None
        return self.result["ips"][0]["address"].split("/")[0]

    @property
    def host_if(self) -> str:
        return host_veth_name(self.container_id)

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"


def cni(node: SandboxNode, agent: AgentProcess, command: str, pod: Pod | None = None,
        version: str = "1.0.0", **conf: Any) -> tuple[int, dict[str, Any] | None, float]:
    """Run kovn-cni in the node's netns as a runtime does; (rc, stdout JSON, seconds)."""
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin"}
    if pod is not None:
        env.update(CNI_CONTAINERID=pod.container_id, CNI_NETNS=pod.netns_path,
                   CNI_IFNAME="eth0", CNI_ARGS=f"IgnoreUnknown=1;K8S_POD_NAMESPACE={NAMESPACE};"
                   f"K8S_POD_NAME={pod.name};K8S_POD_UID={pod.uid}")
    config = {"cniVersion": version, "name": "kovn", "type": "kovn-cni",
              "socket": agent.socket, **conf}
    t0 = time.monotonic()
    proc = subprocess.run(["ip", "netns", "exec", node.netns, KOVN_CNI],
                          input=json.dumps(config).encode(), env=env, capture_output=True,
                          timeout=120, check=False)
    elapsed = time.monotonic() - t0
    out = proc.stdout.decode().strip()
    return proc.returncode, json.loads(out) if out else None, elapsed


def ports_with(node: SandboxNode, key: str, value: str) -> list[str]:
    return vsctl(node, "--bare", "--columns=name", "find", "Interface",
                 f'external_ids:{key}="{value}"').split()


def iface_ids(node: SandboxNode, name: str) -> dict[str, str]:
    table = json.loads(vsctl(node, "--format=json", "--columns=external_ids", "list",
                             "Interface", name))
    return dict(table["data"][0][0][1])


def link_exists(netns: str, name: str) -> bool:
    return netns_exec(netns, ["ip", "link", "show", name]).returncode == 0


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(kube_sandbox: Sandbox) -> Cluster:
    cluster = Cluster(kube_sandbox.kubeconfig)
    cluster.namespace(NAMESPACE)
    return cluster


@pytest.fixture(scope="module")
def agents(kube_sandbox: Sandbox, controller: ControllerProcess,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, AgentProcess]]:
    workdir = Path(tmp_path_factory.mktemp("agents"))
    started = {n.name: AgentProcess(kube_sandbox, n, workdir) for n in kube_sandbox.nodes}
    try:
        for agent in started.values():
            agent.start()
        yield started
    finally:
        for agent in started.values():
            agent.stop()


class Pods:
    """Pods this module made; whatever a test leaves is DELeted and removed at the end."""

    def __init__(self, sandbox: Sandbox, cluster: Cluster, agents: dict[str, AgentProcess]
                 ) -> None:
        self.sandbox, self.cluster, self.agents = sandbox, cluster, agents
        self.made: list[Pod] = []

    def create(self, name: str, node: SandboxNode, add: bool = True) -> Pod:
        manifest = pod_manifest(NAMESPACE, name)
        manifest["spec"]["nodeName"] = node.name  # bound directly: no scheduler involved
        created = self.cluster.create_pod(manifest)
        pod = Pod(name, node, f"{self.sandbox.config.pod_netns_prefix}cni-{name}",
                  container_id=os.urandom(32).hex(), uid=created["metadata"]["uid"])
        netns_add(pod.netns)
        self.made.append(pod)
        if add:
            self.add(pod)
        return pod

    def add(self, pod: Pod) -> float:
        rc, out, elapsed = cni(pod.node, self.agents[pod.node.name], "ADD", pod)
        assert rc == 0, f"ADD {pod.name} failed: {out}"
        pod.result = out
        return elapsed

    def cleanup(self) -> None:
        for pod in self.made:
            cni(pod.node, self.agents[pod.node.name], "DEL", pod)
            netns_delete(pod.netns)
            self.cluster.delete_pod(NAMESPACE, pod.name)


@pytest.fixture(scope="module")
def pods(kube_sandbox: Sandbox, cluster: Cluster, agents: dict[str, AgentProcess]
         ) -> Iterator[Pods]:
    made = Pods(kube_sandbox, cluster, agents)
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture(scope="module")
def pair(kube_sandbox: Sandbox, pods: Pods) -> tuple[Pod, Pod]:
    """Pod a on node1 and pod b on node2, both ADDed."""
    node1, node2 = kube_sandbox.nodes
    return pods.create("a", node1), pods.create("b", node2)


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


def serve(servers: list[subprocess.Popen[str]], pod: Pod, argv: list[str]) -> None:
    """Start a server in the pod's netns and wait for its first line (it listens)."""
    proc = subprocess.Popen(["ip", "netns", "exec", pod.netns, sys.executable, *argv],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    servers.append(proc)
    assert proc.stdout is not None and proc.stdout.readline(), f"server in {pod.name} died"


# --- tests -------------------------------------------------------------------------------------


def test_chassis_and_management_port(kube_sandbox: Sandbox, cluster: Cluster,
                                     agents: dict[str, AgentProcess]) -> None:
    for node in kube_sandbox.nodes:
        ids = vsctl(node, "get", "Open_vSwitch", ".", "external_ids")
        for item in (f"system-id={node.name}", "ovn-encap-type=geneve",
                     f'ovn-encap-ip="{node.underlay_ip}"', "ovn-bridge-datapath-type=netdev"):
            assert item in ids, ids
        assert vsctl(node, "get", "Bridge", "br-int", "fail_mode").strip() == "secure"
        text = cluster.api.call("GET", f"/api/v1/nodes/{node.name}")["metadata"][
            "annotations"][NODE_NETWORK]
        network = NodeNetwork.decode(text)
        eventually(lambda n=node: ports_with(n, "ovn-installed", "true") and "ovn0" in
                   ports_with(n, "iface-id", f"node-{n.name}"),
                   what=f"ovn0 ovn-installed on {node.name}")
        addrs = json.loads(ip("-j", "addr", "show", "ovn0", netns=node.netns))[0]
        assert network.ip in {f"{a['local']}/{a['prefixlen']}" for a in addrs["addr_info"]}
        assert addrs["address"] == network.mac and addrs["mtu"] == network.mtu
        routes = ip("route", "show", "dev", "ovn0", netns=node.netns)
        for subnet in network.pod_subnets:
            assert f"{subnet} via {network.gateway}" in routes, routes
        # node -> join gateway through OVN
        assert ping(node.netns, network.gateway), f"{node.name} cannot ping {network.gateway}"


def test_add_result_and_plumbing(cluster: Cluster, pair: tuple[Pod, Pod]) -> None:
    for pod in pair:
        # The annotation may lag the ADD (held while a burst of pods starts: operators/burst.py).
        network = eventually(lambda p=pod: cluster.network(NAMESPACE, p.name),
                             what=f"{pod.name} annotated")
        assert isinstance(network, PodNetwork)
        result = pod.result
        assert result is not None and result["cniVersion"] == "1.0.0"
        host, inside = result["interfaces"]
        assert host["name"] == pod.host_if and "sandbox" not in host
        assert inside == {"name": "eth0", "mac": network.mac, "sandbox": pod.netns_path}
        assert result["ips"] == [{"address": network.ip, "gateway": network.gateway,
                                  "interface": 1}]
        assert result["routes"][0] == {"dst": "0.0.0.0/0", "gw": network.gateway}
        assert result["dns"] == {}
        # the OVS port, as ovn-kubernetes' tools expect it
        (port,) = ports_with(pod.node, "iface-id", network.logical_switch_port)
        assert port == pod.host_if
        ids = iface_ids(pod.node, port)
        assert ids["iface-id-ver"] == pod.uid and ids["attached_mac"] == network.mac
        assert ids["sandbox"] == pod.container_id and ids["ovn-installed"] == "true"
        # userspace datapath: tx checksum offload off where the pod sends from (the host
        # end only carries ovs-vswitchd's whole frames); the host end without IPv6
        features = netns_exec(pod.netns, ["ethtool", "-k", "eth0"]).stdout
        assert "tx-checksumming: off" in features, features
        disabled = netns_exec(pod.node.netns, ["sysctl", "-n",
                                               f"net.ipv6.conf.{pod.host_if}.disable_ipv6"])
        assert disabled.stdout.strip() == "1"
        assert f"mtu {network.mtu}" in ip("link", "show", "eth0", netns=pod.netns)
        assert "UP" in json.loads(ip("-j", "link", "show", "lo", netns=pod.netns))[0]["flags"]


def test_check(kube_sandbox: Sandbox, agents: dict[str, AgentProcess],
               pair: tuple[Pod, Pod]) -> None:
    a = pair[0]
    rc, out, _ = cni(a.node, agents[a.node.name], "CHECK", a, prevResult=a.result)
    assert (rc, out) == (0, None)
    assert a.result is not None
    wrong = json.loads(json.dumps(a.result))
    wrong["interfaces"][1]["mac"] = "0a:58:00:00:00:01"
    rc, out, _ = cni(a.node, agents[a.node.name], "CHECK", a, prevResult=wrong)
    assert rc != 0 and out is not None and out["code"] == 105 and "MAC" in out["msg"]


def test_pod_to_pod_across_nodes(kube_sandbox: Sandbox, pair: tuple[Pod, Pod],
                                 servers: list[subprocess.Popen[str]]) -> None:
    a, b = pair
    assert ping(a.netns, b.ip) and ping(b.netns, a.ip)
    serve(servers, b, ["-m", "sandbox.serve_hostname", "--name", "b", "--tcp", "8080"])
    serve(servers, a, ["-m", "sandbox.serve_hostname", "--name", "a", "--tcp", "8080"])
    # No NAT: the server sees the client pod's own address.
    assert probe(a.netns, b.ip, 8080) == f"b {a.ip}"
    assert probe(b.netns, a.ip, 8080) == f"a {b.ip}"
    # The node's host netns (agents, host-network pods) reaches the pods of its node.
    node1 = kube_sandbox.nodes[0]
    answer = probe(node1.netns, a.ip, 8080)
    assert answer is not None and answer.startswith("a 100.64."), answer


ECHO = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", 9000))
s.listen(4)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    while data := c.recv(4096):
        c.sendall(data)
    c.close()
"""


def test_agent_restart_keeps_traffic(kube_sandbox: Sandbox, agents: dict[str, AgentProcess],
                                     pair: tuple[Pod, Pod],
                                     servers: list[subprocess.Popen[str]]) -> None:
    a, b = pair
    serve(servers, b, ["-c", ECHO])
    with in_netns(a.netns):
        conn = socket.socket()
    conn.settimeout(2)
    conn.connect((b.ip, 9000))
    stop, gaps, errors = threading.Event(), [], []

    def exchange() -> None:
        last, n = time.monotonic(), 0
        while not stop.is_set():
            try:
                msg = f"{n}\n".encode()
                conn.sendall(msg)
                got = b""
                while len(got) < len(msg):
                    got += conn.recv(64)
                assert got == msg, (got, msg)
            except (OSError, AssertionError) as exc:
                errors.append(exc)
                return
            now = time.monotonic()
            gaps.append(now - last)
            last, n = now, n + 1
            time.sleep(0.02)

    def ports(node: SandboxNode) -> str:
        return vsctl(node, "--columns=name,ofport,_uuid", "list", "Interface")

    before = {n.name: ports(n) for n in kube_sandbox.nodes}
    worker = threading.Thread(target=exchange)
    worker.start()
    try:
        time.sleep(0.5)
        for agent in agents.values():
            agent.stop()
        time.sleep(0.5)  # traffic flows with no agent at all
        for agent in agents.values():
            agent.start()
        time.sleep(1.0)
    finally:
        stop.set()
        worker.join()
        conn.close()
    assert not errors, f"the TCP exchange broke during the restart: {errors}"
    assert len(gaps) > 20 and max(gaps) < 1.0, f"{len(gaps)} round trips, max gap {max(gaps)}"
    # nothing re-created, nothing duplicated
    assert {n.name: ports(n) for n in kube_sandbox.nodes} == before
    for pod in pair:
        assert len(ports_with(pod.node, "iface-id", f"{NAMESPACE}_{pod.name}")) == 1
    for agent in agents.values():
        assert "pod ports kept, 0 removed" in agent.since_start()


def test_readd_replaces_stale_port(kube_sandbox: Sandbox, pods: Pods) -> None:
    """A second sandbox for the same pod (new container id): the old port and veth go."""
    first = pods.create("re", kube_sandbox.nodes[0])
    again = Pod(first.name, first.node, first.netns + "2", os.urandom(32).hex(), uid=first.uid)
    netns_add(again.netns)
    pods.made.append(again)
    pods.add(again)
    assert ports_with(first.node, "iface-id", f"{NAMESPACE}_re") == [again.host_if]
    assert not link_exists(first.node.netns, first.host_if)
    assert not link_exists(first.netns, "eth0"), "its pod end went with it"


def test_add_latency_and_gc(kube_sandbox: Sandbox, cluster: Cluster, pods: Pods,
                            agents: dict[str, AgentProcess], pair: tuple[Pod, Pod]) -> None:
    """~20 ADDs as a runtime does them (one at a time), then GC keeping only pod a."""
    node1 = kube_sandbox.nodes[0]
    batch = [pods.create(f"lat-{i}", node1, add=False) for i in range(20)]
    for pod in batch:
        eventually(lambda p=pod: cluster.network(NAMESPACE, p.name), what=f"{pod.name} annotated")
    times = sorted(pods.add(pod) for pod in batch)
    p50, p99 = statistics.median(times), times[-1] if len(times) < 100 else times[98]
    agent_times = sorted(float(m.group(1)) for m in re.finditer(
        r" ADD t-cni/lat-\S+ .*: ([0-9.]+)s \(", agents[node1.name].text()))
    print(f"\nCNI ADD over {len(times)} pods (kovn-cni wall time): p50 {p50:.3f}s, "
          f"max {p99:.3f}s; in the agent: p50 {statistics.median(agent_times):.3f}s, "
          f"max {agent_times[-1]:.3f}s")
    assert p99 < 5, times
    keep = [p for p in pods.made if p.node is node1 and p not in batch]
    valid = [{"containerID": p.container_id, "ifname": "eth0"} for p in keep]
    kept_ports = {p.host_if for p in keep if ports_with(node1, "sandbox", p.container_id)}
    assert kept_ports, "pod a at least is attached"
    rc, out, _ = cni(node1, agents[node1.name], "GC", version="1.1.0",
                     **{"cni.dev/valid-attachments": valid})
    assert (rc, out) == (0, None)
    for pod in batch:
        assert not ports_with(node1, "sandbox", pod.container_id), pod.name
        assert not link_exists(node1.netns, pod.host_if)
    assert {p.host_if for p in keep if ports_with(node1, "sandbox", p.container_id)} == \
        kept_ports


def test_status(agents: dict[str, AgentProcess], kube_sandbox: Sandbox) -> None:
    node = kube_sandbox.nodes[0]
    assert cni(node, agents[node.name], "STATUS", version="1.1.0")[:2] == (0, None)


def test_reconcile_on_restart(kube_sandbox: Sandbox, cluster: Cluster, pods: Pods,
                              agents: dict[str, AgentProcess]) -> None:
    """Ports of pods that died while the agent was down go; live ones stay."""
    node2 = kube_sandbox.nodes[1]
    dead_netns, dead_pod, live = (pods.create(n, node2) for n in ("r-netns", "r-pod", "r-live"))
    agent = agents[node2.name]
    agent.stop()
    netns_delete(dead_netns.netns)  # sandbox gone without a DEL (veth destroyed with it)
    cluster.delete_pod(NAMESPACE, dead_pod.name)  # pod gone from the API without a DEL
    eventually(lambda: cluster.pod(NAMESPACE, dead_pod.name) is None, what="pod deleted")
    agent.start()
    assert not ports_with(node2, "sandbox", dead_netns.container_id)
    assert not ports_with(node2, "sandbox", dead_pod.container_id)
    assert not link_exists(node2.netns, dead_pod.host_if)
    assert ports_with(node2, "sandbox", live.container_id) == [live.host_if]
    log = agent.since_start()
    assert log.count("reconcile: removed") == 2 and "pod ports kept, 2 removed" in log, log


def test_del_is_idempotent(kube_sandbox: Sandbox, pods: Pods, agents: dict[str, AgentProcess],
                           pair: tuple[Pod, Pod]) -> None:
    b = pair[1]
    agent = agents[b.node.name]
    for _ in range(2):
        rc, out, _ = cni(b.node, agent, "DEL", b)
        assert (rc, out) == (0, None)
    assert not ports_with(b.node, "sandbox", b.container_id)
    assert not ports_with(b.node, "iface-id", f"{NAMESPACE}_b")
    assert not link_exists(b.node.netns, b.host_if)
    assert not link_exists(b.netns, "eth0")
    # the netns is gone as well: still success
    netns_delete(b.netns)
    assert cni(b.node, agent, "DEL", b)[:2] == (0, None)
