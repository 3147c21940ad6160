"""The outside reaches Services, without kube-proxy: NodePort on every node's external IP,
spec.externalIPs, LoadBalancer ingress IPs (assigned by the sandbox's cloud, sandbox.lbpool)
and externalTrafficPolicy Local (the client's own address reaches the pod; a node without a
local endpoint does not serve); node ports on the nodes' own addresses, and the nodes' own
connections to a ClusterIP. Real control plane, real packets from the outside namespace
(198.51.100.1, the internet beyond the nodes' gateway routers) and from the nodes'
namespaces."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from sandbox.cluster import Sandbox
from sandbox.controlplane import eventually
from sandbox.lbpool import POOL
from sandbox.probe import probe
from tests.e2e.controlplane import Cluster
from tests.e2e.test_network_model import PORT, Pod, ready_pods, web_and_solo

pytestmark = pytest.mark.e2e
NS = "svc-out"
EXTERNAL_IP = "198.51.100.230"


@pytest.fixture(scope="module")
def cluster(cluster_sandbox: Sandbox) -> Cluster:
    return web_and_solo(cluster_sandbox.kubeconfig, NS)


@pytest.fixture(scope="module")
def web(cluster_sandbox: Sandbox, cluster: Cluster) -> list[Pod]:
    return ready_pods(cluster_sandbox, cluster, NS, "web", 3)


@pytest.fixture(scope="module")
def solo(cluster_sandbox: Sandbox, cluster: Cluster) -> Pod:
    return ready_pods(cluster_sandbox, cluster, NS, "solo", 1)[0]


def make_service(cluster: Cluster, name: str, app: str, **spec: Any) -> dict[str, Any]:
    return cluster.create_service(NS, name, app, PORT, PORT, **spec)


def node_port(service: dict[str, Any], proto: str = "TCP") -> int:
    return next(p["nodePort"] for p in service["spec"]["ports"] if p["protocol"] == proto)


def ingress_ip(cluster: Cluster, name: str) -> str:
    def assigned() -> str | None:
        svc = cluster.api.get(f"/api/v1/namespaces/{NS}/services/{name}")
        found = (svc.get("status") or {}).get("loadBalancer", {}).get("ingress") or []
        return found[0].get("ip") if found else None
    return eventually(assigned, 15, f"the sandbox's cloud assigns {name} an address")


def from_outside(sandbox: Sandbox, host: str, port: int, count: int = 8,
                 proto: str = "tcp", timeout: float = 2) -> list[str | None]:
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda _: probe(sandbox.config.outside_netns, host, port, proto,
                                             timeout=timeout), range(count)))


def answered_by(answers: list[str | None]) -> set[str]:
    return {a.split()[0] for a in answers if a}


def test_node_port_answers_on_every_nodes_external_ip(cluster_sandbox: Sandbox,
                                                      cluster: Cluster, web: list[Pod]) -> None:
    svc = make_service(cluster, "np", "web", type="NodePort")
    names = {p.name for p in web}
    for node in cluster_sandbox.nodes:
        host = node.external_ip
        eventually(lambda h=host: probe(cluster_sandbox.config.outside_netns, h,
                                        node_port(svc), timeout=1) is not None,
                   10, f"NodePort on {host}")
        # Every connection answers, whichever node its backend runs on.
        answers = from_outside(cluster_sandbox, host, node_port(svc), count=12)
        assert None not in answers, f"{host}:{node_port(svc)}: {answers}"
        assert answered_by(answers) <= names and len(answered_by(answers)) >= 2
        udp = from_outside(cluster_sandbox, host, node_port(svc, "UDP"), count=4, proto="udp")
        assert None not in udp, f"UDP {host}:{node_port(svc, 'UDP')}: {udp}"


def test_client_ip_affinity_holds_for_node_ports(cluster_sandbox: Sandbox, cluster: Cluster,
                                                web: list[Pod]) -> None:
    """The node ports' template load balancer hashes the client's address (OVN 23.03's
    affinity flows for template VIPs never match): every connection from the outside to
    one node's port reaches one backend (12 from 1 of 3 by chance: 3**-11)."""
    svc = make_service(cluster, "np-sticky", "web", type="NodePort",
                       sessionAffinity="ClientIP")
    for node in cluster_sandbox.nodes:
        host = node.external_ip
        eventually(lambda h=host: probe(cluster_sandbox.config.outside_netns, h,
                                        node_port(svc), timeout=1) is not None,
                   10, f"NodePort on {host}")
        answers = [next((a for _ in range(3) if (a := probe(
            cluster_sandbox.config.outside_netns, host, node_port(svc), timeout=2))), None)
            for _ in range(12)]
        assert None not in answers and len(answered_by(answers)) == 1, f"{host}: {answers}"


def test_external_ip_reaches_a_backend(cluster_sandbox: Sandbox, cluster: Cluster,
                                       web: list[Pod]) -> None:
    make_service(cluster, "ext", "web", externalIPs=[EXTERNAL_IP])
    eventually(lambda: probe(cluster_sandbox.config.outside_netns, EXTERNAL_IP, 80,
                             timeout=1) is not None, 10, f"externalIP {EXTERNAL_IP}")
    answers = from_outside(cluster_sandbox, EXTERNAL_IP, 80)
    assert None not in answers and answered_by(answers) <= {p.name for p in web}


def test_load_balancer_ip_reaches_a_backend(cluster_sandbox: Sandbox, cluster: Cluster,
                                            web: list[Pod]) -> None:
    make_service(cluster, "lb", "web", type="LoadBalancer")
    ip = ingress_ip(cluster, "lb")
    assert ip.startswith(POOL.rsplit(".", 1)[0])
    eventually(lambda: probe(cluster_sandbox.config.outside_netns, ip, 80,
                             timeout=1) is not None, 10, f"LoadBalancer IP {ip}")
    answers = from_outside(cluster_sandbox, ip, 80)
    assert None not in answers and answered_by(answers) <= {p.name for p in web}
    udp = from_outside(cluster_sandbox, ip, 80, count=4, proto="udp")
    assert None not in udp


def test_local_policy_keeps_the_client_address_and_only_nodes_with_endpoints_serve(
        cluster_sandbox: Sandbox, cluster: Cluster, solo: Pod) -> None:
    svc = make_service(cluster, "local", "solo", type="LoadBalancer",
                       externalTrafficPolicy="Local")
    ip = ingress_ip(cluster, "local")
    outside = cluster_sandbox.config.outside_gateway
    home = cluster_sandbox.node(solo.node).external_ip
    eventually(lambda: probe(cluster_sandbox.config.outside_netns, home, node_port(svc),
                             timeout=1) is not None, 10, f"NodePort on {home}")
    # The pod sees the outside client itself, not a gateway router's address.
    for host, port in ((home, node_port(svc)), (ip, 80)):
        answers = from_outside(cluster_sandbox, host, port, count=4)
        assert answers == [f"{solo.name} {outside}"] * 4, (host, answers)
    # A node without a local endpoint does not serve the node port.
    for node in cluster_sandbox.nodes:
        if node.name != solo.node:
            assert from_outside(cluster_sandbox, node.external_ip, node_port(svc), count=2,
                                timeout=0.5) == [None, None]


def test_changing_the_type_back_releases_the_address(cluster_sandbox: Sandbox,
                                                     cluster: Cluster, web: list[Pod]) -> None:
    make_service(cluster, "brief", "web", type="LoadBalancer")
    ip = ingress_ip(cluster, "brief")
    eventually(lambda: probe(cluster_sandbox.config.outside_netns, ip, 80,
                             timeout=1) is not None, 10, f"LoadBalancer IP {ip}")
    cluster.api.merge_patch(f"/api/v1/namespaces/{NS}/services/brief",
                            {"spec": {"type": "ClusterIP"}})
    eventually(lambda: not (cluster.api.get(f"/api/v1/namespaces/{NS}/services/brief")
                            .get("status", {}).get("loadBalancer", {}).get("ingress")),
               10, "the address released")
    eventually(lambda: probe(cluster_sandbox.config.outside_netns, ip, 80,
                             timeout=0.5) is None, 10, f"{ip} no longer served")


def test_node_port_answers_on_every_nodes_own_address(cluster_sandbox: Sandbox,
                                                      cluster: Cluster, web: list[Pod]) -> None:
    """From another node and from the node itself, to the node's InternalIP: the agent's
    nft table (node/nodeports.py) hands it to the Service's cluster IP."""
    svc = make_service(cluster, "np-own", "web", type="NodePort")
    names = {p.name for p in web}
    nodes = cluster_sandbox.nodes
    for target in nodes:
        for source in nodes:
            eventually(lambda s=source, t=target: probe(s.netns, t.underlay_ip, node_port(svc),
                                                        timeout=1) is not None, 10,
                       f"{source.name} -> {target.name} {target.underlay_ip}:{node_port(svc)}")
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda _, s=source, t=target: probe(
                    s.netns, t.underlay_ip, node_port(svc), timeout=2), range(8)))
            assert None not in answers and answered_by(answers) <= names
        udp = probe(nodes[0].netns, target.underlay_ip, node_port(svc, "UDP"), "udp")
        assert udp is not None and udp.split()[0] in names


def test_every_node_reaches_a_cluster_ip(cluster_sandbox: Sandbox, cluster: Cluster,
                                         web: list[Pod]) -> None:
    """kube-proxy's node -> Service path (host-network pods use it too): the agent routes
    the service range into ovn0 via the node's gateway router, which balances it."""
    cluster_ip = make_service(cluster, "from-node", "web")["spec"]["clusterIP"]
    names = {p.name for p in web}
    for node in cluster_sandbox.nodes:
        eventually(lambda n=node: probe(n.netns, cluster_ip, 80, timeout=1) is not None, 10,
                   f"{node.name} -> {cluster_ip}:80")
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _, n=node: probe(n.netns, cluster_ip, 80,
                                                            timeout=2), range(12)))
        assert None not in answers and answered_by(answers) <= names
        assert len(answered_by(answers)) >= 2
        udp = probe(node.netns, cluster_ip, 80, "udp")
        assert udp is not None and udp.split()[0] in names


def test_internal_traffic_policy_local_stays_on_the_clients_node(
        cluster_sandbox: Sandbox, cluster: Cluster, web: list[Pod], solo: Pod) -> None:
    """internalTrafficPolicy Local: a pod reaches only the endpoints on its own node (the
    template backends each chassis fills in), and nothing when its node has none."""
    solo_ip = make_service(cluster, "itp-solo", "solo",
                           internalTrafficPolicy="Local")["spec"]["clusterIP"]
    web_ip = make_service(cluster, "itp-web", "web",
                          internalTrafficPolicy="Local")["spec"]["clusterIP"]
    on_node = {p.node: {q.name for q in web if q.node == p.node} for p in web}
    for client in web:
        eventually(lambda c=client: probe(c.netns, web_ip, 80, timeout=1) is not None, 10,
                   f"{client.name} -> {web_ip}:80")
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _, c=client: probe(c.netns, web_ip, 80, timeout=2),
                                    range(6)))
        assert None not in answers and answered_by(answers) <= on_node[client.node], answers
    near = [p for p in web if p.node == solo.node]
    far = [p for p in web if p.node != solo.node]
    for client in near:
        answer = eventually(lambda c=client: probe(c.netns, solo_ip, 80, timeout=1), 10,
                            f"{client.name} -> {solo_ip}:80 on solo's node")
        assert answer.split()[0] == solo.name
    for client in far:  # no endpoint on this node: dropped, not sent to the other node
        assert probe(client.netns, solo_ip, 80, timeout=0.5) is None
        assert probe(client.netns, solo_ip, 80, "udp", timeout=0.5) is None
    # The nodes themselves too (through their gateway routers).
    for node in cluster_sandbox.nodes:
        if node.name == solo.node:
            answer = eventually(lambda n=node: probe(n.netns, solo_ip, 80, timeout=1), 10,
                                f"{node.name} -> {solo_ip}:80")
            assert answer.split()[0] == solo.name
        else:
            assert probe(node.netns, solo_ip, 80, "udp", timeout=0.5) is None
