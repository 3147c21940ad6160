"""Egress through each node's gateway router, proven with real packets on the session's
2-node cluster.

The outside namespace (198.51.100.1, sandbox/outside.py) answers TCP and UDP on port 80 with
`outside <client ip>`: the address it saw. A pod of a `natOutgoing` Subnet must be seen as its
own node's external IP (the GR of the node it runs on, not any GR); a pod of a routed Subnet
with its pod IP, and the outside reaches it back at that IP. Flipping `natOutgoing` moves the
SNAT rows of every gateway router.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from sandbox.cluster import Sandbox
from sandbox.controlplane import eventually
from sandbox.outside import SERVER_PORT
from sandbox.probe import ping, probe
from tests.e2e.controlplane import REPO, Cluster, condition
from tests.e2e.test_network_model import PORT, Pod, create_deployment, parallel, ready_pods

pytestmark = pytest.mark.e2e
NAT_NS, ROUTED_NS = "gw-nat", "gw-routed"
NAT_CIDR, ROUTED_CIDR = "10.70.0.0/24", "10.71.0.0/24"


def _subnet(cluster: Cluster, name: str, cidr: str, namespace: str, nat: bool) -> None:
    cluster.apply_subnet(name, {"cidrBlock": cidr, "namespaces": [namespace],
                                "natOutgoing": nat})
    eventually(lambda: condition(cluster.subnet(name), "Ready").get("status") == "True",
               what=f"subnet {name} Ready")


def _pods(sandbox: Sandbox, namespace: str, cidr: str, nat: bool) -> list[Pod]:
    cluster = Cluster(sandbox.kubeconfig)
    _subnet(cluster, namespace, cidr, namespace, nat)
    create_deployment(cluster, namespace, "web", 2)  # one per node (topology spread)
    pods = ready_pods(sandbox, cluster, namespace, "web", 2)
    assert {p.node for p in pods} == {n.name for n in sandbox.nodes}
    return pods


def _seen(sandbox: Sandbox, pod: Pod, proto: str = "tcp") -> str | None:
    """The source address the outside saw for a connection from `pod`."""
    answer = probe(pod.netns, sandbox.config.outside_gateway, SERVER_PORT, proto)
    return answer.split()[1] if answer and answer.startswith("outside ") else answer


@pytest.fixture(scope="module")
def nat_pods(cluster_sandbox: Sandbox) -> list[Pod]:
    return _pods(cluster_sandbox, NAT_NS, NAT_CIDR, nat=True)


@pytest.fixture(scope="module")
def routed_pods(cluster_sandbox: Sandbox) -> list[Pod]:
    return _pods(cluster_sandbox, ROUTED_NS, ROUTED_CIDR, nat=False)


def test_nat_pods_leave_as_their_own_nodes_external_ip(cluster_sandbox: Sandbox,
                                                       nat_pods: list[Pod]) -> None:
    outside = cluster_sandbox.config.outside_gateway
    external = {n.name: n.external_ip for n in cluster_sandbox.nodes}
    for pod in nat_pods:
        assert ping(pod.netns, outside), f"{pod.key} cannot ping the outside"
    # Ten TCP connections and ten UDP datagrams per pod: all leave through the pod's node
    # (ECMP alone would spread them over both gateways).
    jobs = [(pod, proto) for pod in nat_pods for proto in ("tcp", "udp") for _ in range(10)]
    seen = parallel(jobs, lambda job: (job[0].node, _seen(cluster_sandbox, *job)))
    assert seen == [(pod.node, external[pod.node]) for pod, _ in jobs]


def test_routed_pods_are_seen_with_their_pod_ip(cluster_sandbox: Sandbox,
                                                routed_pods: list[Pod]) -> None:
    outside = cluster_sandbox.config.outside_gateway
    for pod in routed_pods:
        assert ping(pod.netns, outside)
        assert _seen(cluster_sandbox, pod) == pod.ip
        assert _seen(cluster_sandbox, pod, "udp") == pod.ip
        # ... and the outside reaches the pod back at that address (its route via the nodes).
        answer = probe(cluster_sandbox.config.outside_netns, pod.ip, PORT)
        assert answer == f"{pod.name} {outside}"


def test_nat_outgoing_flips_with_the_subnet(cluster_sandbox: Sandbox,
                                            routed_pods: list[Pod]) -> None:
    cluster = Cluster(cluster_sandbox.kubeconfig)
    external = {n.name: n.external_ip for n in cluster_sandbox.nodes}
    pod = routed_pods[0]
    cluster.apply_subnet(ROUTED_NS, {"cidrBlock": ROUTED_CIDR, "namespaces": [ROUTED_NS],
                                     "natOutgoing": True})
    eventually(lambda: _seen(cluster_sandbox, pod) == external[pod.node], timeout=10,
               what=f"{pod.key} seen as {external[pod.node]} once natOutgoing is on")
    cluster.apply_subnet(ROUTED_NS, {"cidrBlock": ROUTED_CIDR, "namespaces": [ROUTED_NS],
                                     "natOutgoing": False})
    eventually(lambda: _seen(cluster_sandbox, pod) == pod.ip, timeout=10,
               what=f"{pod.key} seen with its own IP once natOutgoing is off")


def _kovn(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_show_tags_the_gateway_rows_with_their_node(cluster_sandbox: Sandbox,
                                                    nat_pods: list[Pod]) -> None:
    shown = _kovn(cluster_sandbox, "show", "--nb", cluster_sandbox.nb_remote)
    assert shown.returncode == 0, shown.stderr
    for node in cluster_sandbox.nodes:
        name = node.name
        for line in (f"router GR_{name}  [Node {name}]", f"switch ext_{name}  [Node {name}]",
                     f"port rtoe-GR_{name}  [Node {name}]", f"port ln-ext_{name}  [Node {name}]",
                     f"port jtor-GR_{name}  [Node {name}]",
                     f"nat snat {node.external_ip} <-> {NAT_CIDR}  [Node {name}]",
                     f'is_chassis_resident("rtoj-GR_{name}")" reroute'):
            assert line in shown.stdout, f"{line!r} not in kovn show"
    one = _kovn(cluster_sandbox, "show", "node", "node1", "--nb", cluster_sandbox.nb_remote)
    assert "router GR_node1" in one.stdout and "GR_node2" not in one.stdout


def test_exec_outside(cluster_sandbox: Sandbox, nat_pods: list[Pod]) -> None:
    state = str(cluster_sandbox.state_dir)
    result = _kovn(cluster_sandbox, "sandbox", "exec", "--state-dir", state, "outside", "--",
                   "ping", "-c1", "-W2", cluster_sandbox.nodes[0].external_ip)
    assert result.returncode == 0, result.stdout + result.stderr
    answered = _kovn(cluster_sandbox, "sandbox", "probe", "--state-dir", state,
                     f"{NAT_NS}/{nat_pods[0].name}", cluster_sandbox.config.outside_gateway,
                     str(SERVER_PORT))
    node = cluster_sandbox.node(nat_pods[0].node)
    assert answered.stdout.strip() == f"outside {node.external_ip}", answered
