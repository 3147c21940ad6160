"""The Kubernetes network model, proven with real packets on a 2-node sandbox cluster.

Ordinary Deployments go through the real control plane; the kovn controller allocates
addresses and ports, each node's `kovn node` agent and the `kovn-cni` plugin plumb the pods,
the sandbox kubelets run them (a server per containerPort, answering `<pod> <client ip>`) and
probe their readiness from the node's own namespace. Every check is a packet sent from inside
a pod's (or a node's) network namespace. The tests share the session's `cluster_sandbox` and
one 6-replica Deployment; probes run in parallel.
"""

from __future__ import annotations

import collections
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kube.client import KubeError
from node.netns import in_netns
from northbound import names
from sandbox.cluster import Sandbox
from sandbox.controlplane import eventually, nb_ports
from sandbox.netns import netns_list
from sandbox.node import SandboxNode
from sandbox.podruntime import find_record
from sandbox.probe import ping, probe
from sandbox.workloads import agent_ready
from tests.e2e.controlplane import REPO, Cluster, condition

pytestmark = pytest.mark.e2e

PORT = 8080
WEB_NS = "nm-web"


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    ip: str
    node: str
    netns: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def deployment(namespace: str, name: str, replicas: int, readiness: bool = True
               ) -> dict[str, Any]:
    labels = {"app": name}
    container: dict[str, Any] = {
        "name": "server", "image": "registry.k8s.io/e2e-test-images/agnhost:2.52",
        "args": ["serve-hostname", "--tcp", "--udp", f"--port={PORT}"],
        "ports": [{"name": "tcp", "containerPort": PORT},
                  {"name": "udp", "containerPort": PORT, "protocol": "UDP"}]}
    if readiness:  # run from the node's netns: Ready proves node -> pod as well
        container["readinessProbe"] = {"tcpSocket": {"port": "tcp"}, "periodSeconds": 2}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "topologySpreadConstraints": [{
                    "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": labels}}],
                "containers": [container]}}},
    }


def create_deployment(cluster: Cluster, namespace: str, name: str, replicas: int) -> None:
    cluster.namespace(namespace)
    eventually(lambda: _exists(cluster, f"/api/v1/namespaces/{namespace}/serviceaccounts/"
                               "default"), what=f"ServiceAccount {namespace}/default")
    cluster.create_or_get(f"/apis/apps/v1/namespaces/{namespace}/deployments",
                          deployment(namespace, name, replicas))


def web_and_solo(kubeconfig: Path, namespace: str) -> Cluster:
    """The Service tests' workloads in `namespace`: Deployment `web` (3 pods, spread over the
    nodes) and `solo` (1 pod), created once per module; a client for the cluster."""
    cluster = Cluster(kubeconfig)
    create_deployment(cluster, namespace, "web", 3)
    create_deployment(cluster, namespace, "solo", 1)
    return cluster


def _exists(cluster: Cluster, path: str) -> bool:
    try:
        cluster.api.call("GET", path)
    except KubeError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def ready_pods(sandbox: Sandbox, cluster: Cluster, namespace: str, app: str, count: int,
               timeout: float = 60) -> list[Pod]:
    """The `count` pods of Deployment `app`, once all are Ready (with the netns they run in)."""
    def ready() -> list[dict[str, Any]] | None:
        items = [p for p in cluster.pods(namespace, f"app={app}")
                 if not p["metadata"].get("deletionTimestamp")]
        done = [p for p in items if condition(p, "Ready").get("status") == "True"]
        return done if len(done) == count == len(items) else None

    items = eventually(ready, timeout, f"{count} pods of {namespace}/{app} Ready")
    pods = []
    for item in items:
        name = item["metadata"]["name"]
        record = find_record(sandbox.kubelet_states(), namespace, name)
        assert record is not None, f"no kubelet runs {namespace}/{name}"
        assert record.pod_ips == [item["status"]["podIP"]]
        pods.append(Pod(namespace, name, item["status"]["podIP"], item["spec"]["nodeName"],
                        record.netns))
    return sorted(pods, key=lambda p: (p.node, p.name))


def parallel(jobs: list[Any], func: Any) -> list[Any]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(func, jobs))


def tcp_from(netns: str, ip: str, port: int = PORT, timeout: float = 2.0) -> str | None:
    return probe(netns, ip, port, timeout=timeout)


def br_int_ports(node: SandboxNode) -> dict[str, str]:
    """OVS interface name -> external_ids:iface-id of the node's pod ports."""
    out = subprocess.run(
        ["ovs-vsctl", f"--db={node.ovs_remote}", "--format=json", "--columns=name,external_ids",
         "find", "Interface", "external_ids:iface-id!=\"\""],
        capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)["data"]
    return {name: dict(ids[1]).get("iface-id", "") for name, ids in rows}


def veths(node: SandboxNode) -> set[str]:
    out = subprocess.run(["ip", "-n", node.netns, "-j", "link", "show", "type", "veth"],
                         capture_output=True, text=True, check=True).stdout
    return {link["ifname"] for link in json.loads(out or "[]")}


def using_ips(cluster: Cluster, subnet: str) -> int | None:
    return ((cluster.subnet(subnet) or {}).get("status") or {}).get("usingIPs")


@pytest.fixture(scope="module")
def cluster(cluster_sandbox: Sandbox) -> Cluster:
    return Cluster(cluster_sandbox.kubeconfig)


@pytest.fixture(scope="module")
def web(cluster_sandbox: Sandbox, cluster: Cluster) -> list[Pod]:
    """A Deployment of 6 replicas spread over the 2 nodes, all Ready."""
    create_deployment(cluster, WEB_NS, "web", 6)
    return ready_pods(cluster_sandbox, cluster, WEB_NS, "web", 6)


def test_pods_spread_and_get_their_own_ips(cluster_sandbox: Sandbox, web: list[Pod]) -> None:
    assert {p.node for p in web} == {n.name for n in cluster_sandbox.nodes}
    assert len({p.ip for p in web}) == 6
    assert len({p.netns for p in web}) == 6


def test_every_pod_reaches_every_other_pod_without_nat(web: list[Pod]) -> None:
    pairs = [(src, dst) for src in web for dst in web if src is not dst]

    def check(pair: tuple[Pod, Pod]) -> str:
        src, dst = pair
        answer = tcp_from(src.netns, dst.ip)
        udp = probe(src.netns, dst.ip, PORT, "udp")
        problems = []
        if answer != f"{dst.name} {src.ip}":  # the server saw the client's own pod IP
            problems.append(f"tcp answered {answer!r}")
        if udp != f"{dst.name} {src.ip}":
            problems.append(f"udp answered {udp!r}")
        if not ping(src.netns, dst.ip, count=2):
            problems.append("no ping reply")
        where = "across nodes" if src.node != dst.node else "on one node"
        return f"{src.name} -> {dst.name} ({where}): {', '.join(problems)}" if problems else ""

    failures = [f for f in parallel(pairs, check) if f]
    assert not failures, "\n".join(failures)
    assert any(s.node != d.node for s, d in pairs)


def test_each_node_reaches_its_pods(cluster_sandbox: Sandbox, web: list[Pod]) -> None:
    def check(pod: Pod) -> str:
        node = cluster_sandbox.node(pod.node)
        answer = tcp_from(node.netns, pod.ip)
        ok = answer is not None and answer.startswith(pod.name) and ping(node.netns, pod.ip)
        return "" if ok else f"{node.name} -> {pod.name}: tcp {answer!r}"

    failures = [f for f in parallel(web, check) if f]
    assert not failures, "\n".join(failures)


def test_host_network_pod_reaches_every_pod(cluster_sandbox: Sandbox, cluster: Cluster,
                                            web: list[Pod]) -> None:
    node = cluster_sandbox.nodes[0]
    cluster.create_pod({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hostnet", "namespace": WEB_NS},
        "spec": {"hostNetwork": True, "nodeSelector": {"kubernetes.io/hostname": node.name},
                 "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": "kovn.io/serve-hostname",
                                 "ports": [{"containerPort": 9099}]}]}})
    try:
        pod = eventually(lambda: (p := cluster.pod(WEB_NS, "hostnet")) and
                         condition(p, "Ready").get("status") == "True" and p,
                         what="host-network pod Ready")
        assert pod["status"]["podIP"] == node.underlay_ip == pod["status"]["hostIP"]
        record = find_record(cluster_sandbox.kubelet_states(), WEB_NS, "hostnet")
        assert record is not None and record.netns == node.netns
        # Its server listens in the node's namespace.
        assert tcp_from(node.netns, node.underlay_ip, 9099) == f"hostnet {node.underlay_ip}"

        def check(dst: Pod) -> str:
            answer = tcp_from(record.netns, dst.ip)
            ok = answer is not None and answer.startswith(dst.name) and ping(record.netns,
                                                                             dst.ip)
            return "" if ok else f"hostnet -> {dst.name} on {dst.node}: {answer!r}"

        failures = [f for f in parallel(web, check) if f]
        assert not failures, "\n".join(failures)
    finally:
        cluster.delete_pod(WEB_NS, "hostnet")
    eventually(lambda: cluster.pod(WEB_NS, "hostnet") is None, what="host-network pod gone")


def sandbox_cli(sandbox: Sandbox, action: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "cli.main", "sandbox", action, "--state-dir",
            str(sandbox.state_dir), *args]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180)


def test_sandbox_exec_and_probe_from_a_pod(cluster_sandbox: Sandbox, web: list[Pod]) -> None:
    src, dst = web[0], web[-1]
    shown = sandbox_cli(cluster_sandbox, "exec", src.key, "--", "ip", "-br", "-4", "addr",
                        "show", "eth0")
    assert shown.returncode == 0 and f"{src.ip}/16" in shown.stdout, shown
    for proto in ("tcp", "udp"):
        answer = sandbox_cli(cluster_sandbox, "probe", src.key, dst.ip, str(PORT), proto)
        assert (answer.returncode, answer.stdout) == (0, f"{dst.name} {src.ip}\n"), answer
    nothing = sandbox_cli(cluster_sandbox, "probe", src.key, dst.ip, "9", "--timeout", "0.5")
    assert nothing.returncode == 1 and "nothing answered" in nothing.stdout
    missing = sandbox_cli(cluster_sandbox, "exec", f"{WEB_NS}/nope", "--", "true")
    assert missing.returncode == 1 and "no running pod" in missing.stderr


def test_demo_runs_the_example_deployment(cluster_sandbox: Sandbox) -> None:
    demo = sandbox_cli(cluster_sandbox, "demo")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "12/12 pod pairs reach each other" in demo.stdout
    assert "4/4 node -> own pod paths" in demo.stdout
    assert "4/4 pods reach the outside 198.51.100.1 as their own node's external IP" in demo.stdout
    assert "switch ovn-default" in demo.stdout  # kovn show


class Flow:
    """A TCP connection from one pod to another, echoing a line every 50 ms."""

    def __init__(self, client: Pod, server: Pod, port: int = 7007) -> None:
        with in_netns(server.netns):
            self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((server.ip, port))
        self.listener.listen(1)
        self.peer = ""
        threading.Thread(target=self._echo, daemon=True).start()
        with in_netns(client.netns):
            self.conn = socket.socket()
        self.conn.settimeout(5)
        self.conn.connect((server.ip, port))
        self.sent = 0
        self.longest_wait = 0.0
        self.errors: list[str] = []

    def _echo(self) -> None:
        conn, peer = self.listener.accept()
        self.peer = peer[0]
        with conn, contextlib.suppress(OSError):  # the client reset it: the test says why
            while data := conn.recv(4096):
                conn.sendall(data)

    def run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            line = f"{self.sent}\n".encode()
            started = time.monotonic()
            try:
                self.conn.sendall(line)
                got = b""
                while not got.endswith(b"\n"):
                    chunk = self.conn.recv(64)
                    if not chunk:
                        raise OSError("connection closed")
                    got += chunk
                if got != line:
                    self.errors.append(f"echo {got!r} for {line!r}")
            except OSError as exc:
                self.errors.append(f"message {self.sent}: {exc}")
                return
            self.longest_wait = max(self.longest_wait, time.monotonic() - started)
            self.sent += 1
            time.sleep(0.05)

    def close(self) -> None:
        self.conn.close()
        self.listener.close()


def test_agent_restart_keeps_running_flows(cluster_sandbox: Sandbox, cluster: Cluster,
                                           web: list[Pod]) -> None:
    node = cluster_sandbox.nodes[0]
    server = next(p for p in web if p.node == node.name)
    client = next(p for p in web if p.node != node.name)
    local = next(p for p in web if p.node == node.name and p is not server)
    ports_before = br_int_ports(node)
    flows = [Flow(client, server), Flow(local, server, port=7008)]
    background = [threading.Thread(target=f.run_for, args=(6.0,)) for f in flows]
    try:
        for thread in background:
            thread.start()
        time.sleep(1)
        cluster_sandbox.restart(f"{node.name}/agent")
        eventually(lambda: agent_ready(node), what=f"{node.name}'s agent back")
        for thread in background:
            thread.join()
    finally:
        for flow in flows:
            flow.close()
    for flow in flows:
        assert not flow.errors, flow.errors
        assert flow.sent > 50 and flow.longest_wait < 1.0, (flow.sent, flow.longest_wait)
    assert flows[0].peer == client.ip  # across nodes, no NAT
    after = br_int_ports(node)
    assert after == ports_before, "the restart must neither add nor remove pod ports"
    duplicates = [i for i, n in collections.Counter(after.values()).items() if n > 1]
    assert not duplicates
    # The restarted agent serves new pods.
    create_deployment(cluster, "nm-after", "after", 2)
    after_pods = ready_pods(cluster_sandbox, cluster, "nm-after", "after", 2)
    assert tcp_from(after_pods[0].netns, server.ip) == f"{server.name} {after_pods[0].ip}"


def test_kubelet_restart_adopts_its_pods(cluster_sandbox: Sandbox, cluster: Cluster,
                                         web: list[Pod]) -> None:
    node = cluster_sandbox.nodes[1]
    add_log = cluster_sandbox.kubelet_states()[1] / "cni-add.jsonl"
    adds_before = add_log.read_text().count("\n")
    cluster_sandbox.restart(f"{node.name}/kubelet")
    mine = [p for p in web if p.node == node.name]
    for pod in mine:
        eventually(lambda p=pod: tcp_from(node.netns, p.ip, timeout=0.5),
                   what=f"{pod.name} serving again after the kubelet restart")
    assert add_log.read_text().count("\n") == adds_before, "adopted pods need no CNI ADD"
    assert ready_pods(cluster_sandbox, cluster, WEB_NS, "web", 6) == web


def test_subnets_reach_through_the_cluster_router_and_private_is_isolated(
        cluster_sandbox: Sandbox, cluster: Cluster, web: list[Pod]) -> None:
    cluster.apply_subnet("nm-blue", {"cidrBlock": "10.17.0.0/16", "namespaces": ["nm-blue"]})
    cluster.apply_subnet("nm-private", {"cidrBlock": "10.18.0.0/16", "namespaces": ["nm-priv"],
                                        "private": True, "allowSubnets": ["10.17.0.0/16"]})
    for name in ("nm-blue", "nm-private"):
        eventually(lambda n=name: condition(cluster.subnet(n), "Ready").get("status") == "True",
                   what=f"Subnet {name} Ready")
    create_deployment(cluster, "nm-blue", "blue", 2)
    create_deployment(cluster, "nm-priv", "priv", 2)
    blue = ready_pods(cluster_sandbox, cluster, "nm-blue", "blue", 2)
    priv = ready_pods(cluster_sandbox, cluster, "nm-priv", "priv", 2)
    assert all(p.ip.startswith("10.17.") for p in blue)
    assert all(p.ip.startswith("10.18.") for p in priv)
    default = [web[0], web[-1]]  # one per node
    assert default[0].node != default[1].node

    def reach_once(src: Pod, dst: Pod) -> bool:
        ok = tcp_from(src.netns, dst.ip, timeout=1.0) == f"{dst.name} {src.ip}"
        return ok and ping(src.netns, dst.ip, count=2)

    def reach(pair: tuple[Pod, Pod], settle: float = 0.0) -> tuple[str, str, bool]:
        """One probe, or (settle > 0) probes until one passes: the pods just became Ready
        and, under CI load, a first packet can lose its way to a busy vswitchd's upcall."""
        src, dst = pair
        deadline = time.monotonic() + settle
        while not (ok := reach_once(src, dst)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return src.namespace, dst.namespace, ok

    open_pairs = ([(a, b) for a in blue for b in default] + [(b, a) for a in blue
                                                             for b in default]
                  + [(a, b) for a in blue for b in priv]  # allowSubnets
                  + [(priv[0], priv[1]), (priv[1], priv[0])]  # inside the private subnet
                  + [(a, b) for a in priv for b in default])  # out of it: replies come back
    closed_pairs = [(a, b) for a in default for b in priv]
    opened = parallel(open_pairs, lambda pair: reach(pair, settle=10.0))
    closed = parallel(closed_pairs, reach)  # once the open ones prove the datapath is up
    assert all(ok for *_, ok in opened), [r for r in opened if not r[2]]
    assert not any(ok for *_, ok in closed), [r for r in closed if r[2]]
    # The nodes are admitted too: the kubelets' readiness probes reached the private pods,
    # and so does a connection from the node's namespace.
    for pod in priv:
        assert tcp_from(cluster_sandbox.node(pod.node).netns, pod.ip) is not None


def test_deleting_a_deployment_leaves_nothing_behind(cluster_sandbox: Sandbox,
                                                     cluster: Cluster, web: list[Pod]) -> None:
    nodes = cluster_sandbox.nodes
    before = {
        "veths": {n.name: veths(n) for n in nodes},
        "ovs": {n.name: br_int_ports(n) for n in nodes},
        "nb": set(nb_ports(cluster_sandbox.nb_remote)),
        "using": eventually(lambda: using_ips(cluster, names.DEFAULT_SUBNET) is not None
                            and using_ips(cluster, names.DEFAULT_SUBNET), what="usingIPs"),
    }
    create_deployment(cluster, "nm-gone", "gone", 4)
    pods = ready_pods(cluster_sandbox, cluster, "nm-gone", "gone", 4)
    assert {f"nm-gone_{p.name}" for p in pods} <= set(nb_ports(cluster_sandbox.nb_remote))
    eventually(lambda: using_ips(cluster, names.DEFAULT_SUBNET) == before["using"] + 4,
               what="usingIPs counts the new pods")
    cluster.api.call("DELETE", "/apis/apps/v1/namespaces/nm-gone/deployments/gone",
                     {"propagationPolicy": "Foreground"})
    eventually(lambda: not cluster.pods("nm-gone"), what="the Deployment's pods gone")
    left = set(netns_list()) & {p.netns for p in pods}
    assert not left, f"pod netns left: {left}"
    for node in nodes:
        assert veths(node) == before["veths"][node.name]
        assert br_int_ports(node) == before["ovs"][node.name]
    assert find_record(cluster_sandbox.kubelet_states(), "nm-gone", pods[0].name) is None
    eventually(lambda: set(nb_ports(cluster_sandbox.nb_remote)) == before["nb"],
               what="the pods' logical switch ports removed")
    eventually(lambda: using_ips(cluster, names.DEFAULT_SUBNET) == before["using"],
               what="usingIPs back to what it was")

