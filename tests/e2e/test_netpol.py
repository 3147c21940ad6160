"""NetworkPolicy conformance, modelled on upstream Kubernetes' test/e2e/network/netpol: the
9x9 matrix of namespaces x, y, z times pods a, b, c (tests/e2e/netpol_matrix.py), probed with
real packets from inside every pod's network namespace on the session's 2-node cluster.

Every case starts from no NetworkPolicy in x, y, z, the model's labels and an all-allowed
matrix (the autouse `clean` fixture), applies policies through the real API server (so the
objects carry its defaults, e.g. policyTypes), and polls the matrix until it is the expected
one, failing with expected and observed truth tables. Semantics are networking.k8s.io/v1's.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from typing import Any

import pytest

from contract.podnetwork import NODE_NETWORK, STATIC_IP, NodeNetwork
from controller.config import ClusterConfig
from kube.client import annotations, node_path
from sandbox.cluster import Sandbox
from sandbox.controlplane import eventually
from sandbox.podruntime import find_record
from tests.e2e.controlplane import condition
from tests.e2e.netpol_matrix import (
    POD_CIDR,
    Model,
    Reachability,
    address_sets,
    dns_a,
    owned_rows,
    pod_manifest,
)

pytestmark = pytest.mark.e2e
SERVICE = "svc-a"  # a Service in x for pod x/a, port 80 -> 80
SERVICE_NAME = f"{SERVICE}.x.svc.cluster.local"
HOSTNET_PORT = 9199


@pytest.fixture(scope="module")
def model(cluster_sandbox: Sandbox) -> Iterator[Model]:
    model = Model(cluster_sandbox)
    model.setup()
    try:
        yield model
    finally:
        model.close()


@pytest.fixture(scope="module")
def service_ip(model: Model) -> str:
    """The ClusterIP of Service x/svc-a (selects `pod: a`), once it answers (with no policy
    left by the case before)."""
    model.reset()
    body = {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": "x"},
            "spec": {"selector": {"pod": "a"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 80}]}}
    ip = model.cluster.create_or_get("/api/v1/namespaces/x/services", body)["spec"]["clusterIP"]
    model.reach(model.pods["y/a"].netns, ip, 80, "tcp", "a", timeout=30,
                what="the Service before any policy")
    return ip


@pytest.fixture(autouse=True)
def clean(model: Model) -> None:
    model.reset()


# --- policy building blocks --------------------------------------------------------------------
def sel(**labels: str) -> dict[str, Any]:
    return {"matchLabels": labels}


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    term: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        term["values"] = list(values)
    return {"matchExpressions": [term]}


ALL: dict[str, Any] = {}  # the empty selector: every pod / namespace


def reach(model: Model, default: bool = True) -> Reachability:
    return Reachability(model.keys, default)


def ip32(model: Model, key: str) -> str:
    return f"{model.pods[key].ip}/32"


def only_from(model: Model, to: str, *sources: str) -> Reachability:
    """Everything allowed, except into `to` only from `sources`."""
    expected = reach(model).expect_ingress(to, False)
    return expected.expect_peer(list(sources), to, True) if sources else expected


def only_to(model: Model, from_: str, *targets: str) -> Reachability:
    """Everything allowed, except out of `from_` only to `targets`."""
    expected = reach(model).expect_egress(from_, False)
    return expected.expect_peer(from_, list(targets), True) if targets else expected


def join_ip(model: Model, node: str) -> str:
    """The node's management address (its ovn0 on the join switch)."""
    text = annotations(model.api.get(node_path(node)))[NODE_NETWORK]
    return str(ipaddress.ip_interface(NodeNetwork.decode(text).ip).ip)


# --- no policy ---------------------------------------------------------------------------------
def test_baseline_all_allowed_on_every_served_port(model: Model) -> None:
    nodes = {p.node for p in model.pods.values()}
    assert len(nodes) == 2, f"the pods run on {nodes}"
    assert {p.node for p in model.pods.values() if p.namespace == "x"} == nodes
    for port, proto in ((80, "tcp"), (81, "tcp"), (80, "udp"), (81, "udp")):
        model.check(reach(model), port, proto)
    # No NAT between pods: every server saw its client's own pod IP.
    answers = model.probe_matrix(80, "tcp")
    wrong = {c: a for c, a in answers.items()
             if a != f"{model.pods[c[1]].name} {model.pods[c[0]].ip}"}
    assert not wrong, wrong


# --- default deny and allow-all ----------------------------------------------------------------
def test_deny_all_ingress(model: Model) -> None:
    stored = model.apply_policy("x", "deny-ingress", {"podSelector": ALL})
    assert stored["spec"]["policyTypes"] == ["Ingress"]  # the API server's default
    expected = reach(model).expect_ingress("x", False)
    model.check(expected, 80, "tcp")
    model.check(expected, 80, "udp")


def test_deny_all_egress(model: Model, service_ip: str) -> None:
    model.apply_policy("x", "deny-egress", {"podSelector": ALL, "policyTypes": ["Egress"]})
    expected = reach(model).expect_egress("x", False)
    model.check(expected, 80, "tcp")
    model.check(expected, 80, "udp")
    dns = ClusterConfig().dns_ip
    assert eventually(lambda: dns_a(model.pods["y/a"].netns, dns, SERVICE_NAME), 10,
                      "y/a resolves the Service name") == [service_ip]
    assert all(dns_a(model.pods["x/a"].netns, dns, SERVICE_NAME) is None for _ in range(3)), \
        "a DNS query left a pod whose egress is denied"


def test_deny_all_egress_except_dns(model: Model, service_ip: str) -> None:
    model.apply_policy("x", "deny-egress-but-dns", {
        "podSelector": ALL, "policyTypes": ["Egress"],
        "egress": [{"ports": [{"port": 53, "protocol": "UDP"},
                              {"port": 53, "protocol": "TCP"}]}]})
    model.check(reach(model).expect_egress("x", False), 80, "tcp")
    dns = ClusterConfig().dns_ip
    answer = eventually(lambda: dns_a(model.pods["x/a"].netns, dns, SERVICE_NAME), 10,
                        "x/a resolves the Service name through the port 53 allow")
    assert answer == [service_ip]


def test_deny_all_ingress_and_egress(model: Model) -> None:
    model.apply_policy("x", "deny-all", {"podSelector": ALL,
                                         "policyTypes": ["Ingress", "Egress"]})
    expected = reach(model).expect_ingress("x", False).expect_egress("x", False)
    model.check(expected, 80, "tcp")
    model.check(expected, 81, "udp")


def test_allow_all_ingress_beside_deny_all(model: Model) -> None:
    model.apply_policy("x", "deny-ingress", {"podSelector": ALL})
    model.check(reach(model).expect_ingress("x", False))
    model.apply_policy("x", "allow-all", {"podSelector": ALL, "ingress": [{}]})
    model.check(reach(model))
    model.check(reach(model), 81, "udp")


# --- peers -------------------------------------------------------------------------------------
def test_ingress_from_pods_of_the_same_namespace(model: Model) -> None:
    model.apply_policy("x", "from-b", {"podSelector": sel(pod="a"),
                                       "ingress": [{"from": [{"podSelector": sel(pod="b")}]}]})
    model.check(only_from(model, "x/a", "x/b"))


def test_ingress_from_namespace_selector(model: Model) -> None:
    model.apply_policy("x", "from-y", {
        "podSelector": sel(pod="a"),
        "ingress": [{"from": [{"namespaceSelector": sel(ns="y")}]}]})
    model.check(only_from(model, "x/a", "y"))


def test_ingress_from_namespace_and_pod_selector_in_one_peer(model: Model) -> None:
    model.apply_policy("x", "from-y-b", {
        "podSelector": sel(pod="a"),
        "ingress": [{"from": [{"namespaceSelector": sel(ns="y"), "podSelector": sel(pod="b")}]}]})
    model.check(only_from(model, "x/a", "y/b"))


def test_ingress_from_namespace_or_pod_selector_as_two_peers(model: Model) -> None:
    model.apply_policy("x", "from-y-or-b", {
        "podSelector": sel(pod="a"),
        "ingress": [{"from": [{"namespaceSelector": sel(ns="y")},
                              {"podSelector": sel(pod="b")}]}]})
    model.check(only_from(model, "x/a", "y", "x/b"))


POD_EXPRESSIONS = {
    "In": (expr("pod", "In", "b"), ("*/b",)),
    "NotIn": (expr("pod", "NotIn", "b"), ("*/a", "*/c")),
    "Exists": (expr("role", "Exists"), ("y/c", "z/a")),
    "DoesNotExist": (expr("role", "DoesNotExist"), ("x/b", "x/c", "y/a", "y/b", "z/b", "z/c")),
}


@pytest.mark.parametrize("operator", list(POD_EXPRESSIONS))
def test_ingress_pod_match_expressions(model: Model, operator: str) -> None:
    """Pods of every namespace, picked by a matchExpressions podSelector (y/c and z/a carry
    `role: client`)."""
    selector, allowed = POD_EXPRESSIONS[operator]
    model.label("y/c", role="client")
    model.label("z/a", role="client")
    model.apply_policy("x", f"pods-{operator.lower()}", {
        "podSelector": sel(pod="a"),
        "ingress": [{"from": [{"namespaceSelector": ALL, "podSelector": selector}]}]})
    model.check(only_from(model, "x/a", *allowed))


NAMESPACE_EXPRESSIONS = {
    "In": (expr("ns", "In", "y", "z"), ("y", "z")),
    "NotIn": (expr("ns", "NotIn", "x", "y"), ("z",)),
    "Exists": (expr("env", "Exists"), ("z",)),
    "DoesNotExist": (expr("env", "DoesNotExist"), ("x", "y")),
}


@pytest.mark.parametrize("operator", list(NAMESPACE_EXPRESSIONS))
def test_ingress_namespace_match_expressions(model: Model, operator: str) -> None:
    """Namespaces picked by a matchExpressions namespaceSelector (z carries `env: qa`)."""
    selector, allowed = NAMESPACE_EXPRESSIONS[operator]
    model.label("z", env="qa")
    model.apply_policy("x", f"namespaces-{operator.lower()}", {
        "podSelector": sel(pod="a"), "ingress": [{"from": [{"namespaceSelector": selector}]}]})
    model.check(only_from(model, "x/a", *allowed))


def test_empty_pod_selector_selects_every_pod_of_the_namespace(model: Model) -> None:
    model.apply_policy("y", "same-namespace", {"podSelector": ALL,
                                               "ingress": [{"from": [{"podSelector": ALL}]}]})
    model.check(reach(model).expect_peer(["x", "z"], "y", False))


def test_policy_selecting_one_pod(model: Model) -> None:
    model.apply_policy("x", "deny-b", {"podSelector": sel(pod="b"), "policyTypes": ["Ingress"]})
    model.check(reach(model).expect_ingress("x/b", False))


def test_multiple_policies_allow_the_union_of_their_peers(model: Model) -> None:
    model.apply_policy("x", "from-x-b", {"podSelector": sel(pod="a"),
                                         "ingress": [{"from": [{"podSelector": sel(pod="b")}]}]})
    model.apply_policy("x", "from-z", {
        "podSelector": sel(pod="a"), "ingress": [{"from": [{"namespaceSelector": sel(ns="z")}]}]})
    model.check(only_from(model, "x/a", "x/b", "z"))


def test_multiple_policies_allow_the_union_per_port(model: Model) -> None:
    model.apply_policy("x", "y-on-80", {
        "podSelector": sel(pod="a"),
        "ingress": [{"from": [{"namespaceSelector": sel(ns="y")}], "ports": [{"port": 80}]}]})
    model.apply_policy("x", "z-on-81", {
        "podSelector": sel(pod="a"),
        "ingress": [{"from": [{"namespaceSelector": sel(ns="z")}], "ports": [{"port": 81}]}]})
    model.check(only_from(model, "x/a", "y"), 80, "tcp")
    model.check(only_from(model, "x/a", "z"), 81, "tcp")


# --- ports -------------------------------------------------------------------------------------
@pytest.mark.parametrize("port", [80, "serve-80-tcp"], ids=["number", "name"])
def test_ingress_on_one_port(model: Model, port: int | str) -> None:
    model.apply_policy("x", "only-80", {"podSelector": sel(pod="a"),
                                        "ingress": [{"ports": [{"port": port}]}]})
    model.check(only_from(model, "x/a"), 81, "tcp")
    model.check(reach(model), 80, "tcp")
    model.check(only_from(model, "x/a"), 80, "udp")  # the protocol defaults to TCP


def test_named_port_resolves_per_destination_pod(model: Model) -> None:
    """`web` is 80 on x/a and x/c, 81 on x/b: each pod is open on its own number only."""
    model.apply_policy("x", "web", {"podSelector": ALL,
                                    "ingress": [{"ports": [{"port": "web"}]}]})
    model.check(reach(model).expect_ingress(["x/a", "x/c"], False), 81, "tcp")
    model.check(reach(model).expect_ingress("x/b", False), 80, "tcp")


@pytest.mark.parametrize(("port", "end", "open_ports"), [
    (80, 81, {80, 81}), (81, 90, {81}), (80, None, {80})], ids=["80-81", "81-90", "80"])
def test_ingress_port_range(model: Model, port: int, end: int | None,
                            open_ports: set[int]) -> None:
    entry: dict[str, Any] = {"port": port, "protocol": "TCP"}
    if end is not None:
        entry["endPort"] = end
    model.apply_policy("x", "range", {"podSelector": sel(pod="a"),
                                      "ingress": [{"ports": [entry]}]})
    model.check(only_from(model, "x/a"), 80, "udp")  # first: the policy is in force
    for number in (80, 81):
        model.check(reach(model) if number in open_ports else only_from(model, "x/a"),
                    number, "tcp")


def test_ingress_udp_only(model: Model) -> None:
    model.apply_policy("x", "udp-80", {
        "podSelector": sel(pod="a"), "ingress": [{"ports": [{"port": 80, "protocol": "UDP"}]}]})
    model.check(only_from(model, "x/a"), 80, "tcp")
    model.check(reach(model), 80, "udp")
    model.check(only_from(model, "x/a"), 81, "udp")


# --- egress ------------------------------------------------------------------------------------
def test_egress_to_pod_selector(model: Model) -> None:
    model.apply_policy("x", "to-b", {"podSelector": sel(pod="a"), "policyTypes": ["Egress"],
                                     "egress": [{"to": [{"podSelector": sel(pod="b")}]}]})
    model.check(only_to(model, "x/a", "x/b"))


def test_egress_to_namespace_selector(model: Model) -> None:
    model.apply_policy("x", "to-y", {"podSelector": sel(pod="a"), "policyTypes": ["Egress"],
                                     "egress": [{"to": [{"namespaceSelector": sel(ns="y")}]}]})
    model.check(only_to(model, "x/a", "y"))
    model.check(only_to(model, "x/a", "y"), 81, "udp")


def test_egress_to_ip_block(model: Model) -> None:
    model.apply_policy("x", "to-cidr", {
        "podSelector": sel(pod="a"), "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": ip32(model, "y/b")}}]}]})
    model.check(only_to(model, "x/a", "y/b"))


def test_egress_to_ip_block_with_except(model: Model) -> None:
    assert all(ipaddress.ip_address(p.ip) in ipaddress.ip_network(POD_CIDR)
               for p in model.pods.values())
    model.apply_policy("x", "to-cidr-except", {
        "podSelector": sel(pod="a"), "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": POD_CIDR, "except": [ip32(model, "y/b")]}}]}]})
    model.check(reach(model).expect_peer("x/a", "y/b", False))


def test_ingress_from_ip_block(model: Model) -> None:
    model.apply_policy("x", "from-cidr", {
        "podSelector": sel(pod="a"),
        "ingress": [{"from": [{"ipBlock": {"cidr": ip32(model, "y/b")}}]}]})
    model.check(only_from(model, "x/a", "y/b"))


def test_ingress_from_ip_block_with_except(model: Model) -> None:
    model.apply_policy("x", "from-cidr-except", {
        "podSelector": sel(pod="a"),
        "ingress": [{"from": [{"ipBlock": {"cidr": POD_CIDR, "except": [
            ip32(model, "z/a"), ip32(model, "z/b")]}}]}]})
    model.check(reach(model).expect_peer(["z/a", "z/b"], "x/a", False))


def test_egress_to_a_named_port_of_the_destination(model: Model) -> None:
    """`web` is resolved on each destination: 80 on the a and c pods, 81 on the b pods."""
    model.apply_policy("x", "to-web", {"podSelector": sel(pod="a"), "policyTypes": ["Egress"],
                                       "egress": [{"ports": [{"port": "web"}]}]})
    model.check(only_to(model, "x/a", "*/b"), 81, "tcp")
    model.check(only_to(model, "x/a", "*/a", "*/c"), 80, "tcp")


def test_egress_to_a_service_is_judged_against_its_backend(model: Model,
                                                           service_ip: str) -> None:
    client = model.pods["y/b"].netns
    spec = {"podSelector": sel(pod="b"), "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": sel(ns="x"), "podSelector": sel(pod="a")}]}]}
    model.apply_policy("y", "to-x-a", spec)
    model.check(only_to(model, "y/b", "x/a"))
    model.reach(client, service_ip, 80, "tcp", "a", what="y/b -> ClusterIP (backend x/a)")
    spec["egress"][0]["to"][0]["podSelector"] = sel(pod="b")
    model.apply_policy("y", "to-x-a", spec)
    model.check(only_to(model, "y/b", "x/b"))
    model.reach(client, service_ip, 80, "tcp", None, what="y/b -> ClusterIP (backend x/a)")


# --- policyTypes -------------------------------------------------------------------------------
def test_policy_types_ingress_ignores_egress_rules(model: Model) -> None:
    stored = model.apply_policy("x", "ingress-only", {
        "podSelector": sel(pod="a"), "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": sel(ns="y")}]}],
        "egress": [{"to": [{"podSelector": sel(pod="b")}]}]})
    assert stored["spec"]["policyTypes"] == ["Ingress"]
    model.check(only_from(model, "x/a", "y"))  # and the row of x/a stays open


def test_egress_rules_without_policy_types_isolate_both_directions(model: Model) -> None:
    stored = model.apply_policy("x", "egress-rules", {
        "podSelector": sel(pod="a"), "egress": [{"to": [{"podSelector": sel(pod="b")}]}]})
    assert stored["spec"]["policyTypes"] == ["Ingress", "Egress"]  # defaulted
    model.check(only_to(model, "x/a", "x/b").expect_ingress("x/a", False))


def test_empty_egress_with_policy_types_ingress_isolates_ingress_only(model: Model) -> None:
    model.apply_policy("x", "empty-egress", {"podSelector": sel(pod="a"),
                                             "policyTypes": ["Ingress"], "egress": []})
    model.check(only_from(model, "x/a"))


# --- changes -----------------------------------------------------------------------------------
def test_policy_update_changes_the_allowed_peers(model: Model) -> None:
    spec = {"podSelector": sel(pod="a"), "ingress": [{"from": [{"podSelector": sel(pod="b")}]}]}
    model.apply_policy("x", "from-pod", spec)
    model.check(only_from(model, "x/a", "x/b"))
    spec["ingress"][0]["from"][0]["podSelector"] = sel(pod="c")
    model.apply_policy("x", "from-pod", spec)
    model.check(only_from(model, "x/a", "x/c"))


def test_policy_deletion_allows_everything_again(model: Model) -> None:
    model.apply_policy("x", "deny-ingress", {"podSelector": ALL})
    model.check(reach(model).expect_ingress("x", False))
    model.delete_policy("x", "deny-ingress")
    model.check(reach(model))


def test_deleting_the_last_policy_removes_every_row_it_caused(model: Model) -> None:
    nb = model.sandbox.nb_remote
    before = owned_rows(nb)
    model.apply_policy("y", "peers", {
        "podSelector": sel(pod="a"), "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"namespaceSelector": sel(ns="x"), "podSelector": sel(pod="b")},
                              {"ipBlock": {"cidr": POD_CIDR, "except": [ip32(model, "z/c")]}}],
                     "ports": [{"port": "serve-80-tcp"}, {"port": 81, "endPort": 81}]}],
        "egress": [{"to": [{"namespaceSelector": expr("ns", "In", "z")}],
                    "ports": [{"port": "web"}]}]})
    model.apply_policy("y", "deny-b", {"podSelector": sel(pod="b")})
    model.check(reach(model).expect_ingress("y/b", False).expect_egress("y/a", False)
                .expect_peer("y/a", ["z/a", "z/c"], True).expect_peer("z/c", "y/a", False))
    assert owned_rows(nb) != before, "the policies wrote no Port_Group, ACL or Address_Set"
    model.delete_policy("y", "peers")
    model.delete_policy("y", "deny-b")
    model.check(reach(model))
    deadline = time.monotonic() + 20
    while (after := owned_rows(nb)) != before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert after == before, (f"left: {dict(after - before)}; missing: {dict(before - after)}")


def test_namespace_relabel_moves_it_in_and_out_of_a_selector(model: Model) -> None:
    model.apply_policy("x", "from-blue", {
        "podSelector": sel(pod="a"),
        "ingress": [{"from": [{"namespaceSelector": sel(team="blue")}]}]})
    model.check(only_from(model, "x/a"))
    model.label("z", team="blue")
    model.check(only_from(model, "x/a", "z"))
    model.label("z", team=None)
    model.check(only_from(model, "x/a"))


def test_pod_relabel_moves_it_in_and_out_of_a_selector(model: Model) -> None:
    model.apply_policy("x", "from-clients", {
        "podSelector": sel(pod="a"),
        "ingress": [{"from": [{"namespaceSelector": ALL, "podSelector": sel(role="client")}]}]})
    model.check(only_from(model, "x/a"))
    model.label("y/c", role="client")
    model.check(only_from(model, "x/a", "y/c"))
    model.label("y/c", role=None)
    model.check(only_from(model, "x/a"))


def test_recreated_pod_with_a_new_ip_still_matches(model: Model) -> None:
    model.apply_policy("x", "from-y-b", {
        "podSelector": sel(pod="a"),
        "ingress": [{"from": [{"namespaceSelector": sel(ns="y"), "podSelector": sel(pod="b")}]}]})
    model.check(only_from(model, "x/a", "y/b"))
    old = model.pods["y/b"].ip
    model.cluster.delete_pod("y", "b")
    eventually(lambda: model.cluster.pod("y", "b") is None, 60, "y/b gone")
    new_ip = "10.16.201.7" if old != "10.16.201.7" else "10.16.201.8"
    model.cluster.create_pod(pod_manifest("y", "b", model.node_of["y/b"], {STATIC_IP: new_ip}))
    model.refresh()
    assert model.pods["y/b"].ip == new_ip != old
    model.check(only_from(model, "x/a", "y/b"))


# --- what isolation still lets through ---------------------------------------------------------
def test_replies_to_an_isolated_pods_own_connections_come_back(model: Model) -> None:
    """x/a takes no connection, but opens any: its row is allowed, its column denied."""
    model.apply_policy("x", "deny-a", {"podSelector": sel(pod="a"), "policyTypes": ["Ingress"]})
    expected = only_from(model, "x/a")
    model.check(expected, 80, "tcp")
    model.check(expected, 80, "udp")


def test_nodes_reach_isolated_pods(model: Model) -> None:
    model.apply_policy("x", "deny-ingress", {"podSelector": ALL})
    model.check(reach(model).expect_ingress("x", False))
    for pod in (p for p in model.pods.values() if p.namespace == "x"):
        node = model.sandbox.node(pod.node)
        model.reach(node.netns, pod.ip, 80, "tcp", pod.name,
                    what=f"{node.name}'s management address -> {pod.key}")


def test_hairpin_through_its_own_service_under_deny_all(model: Model, service_ip: str) -> None:
    model.apply_policy("x", "deny-ingress", {"podSelector": ALL})
    model.check(reach(model).expect_ingress("x", False))
    model.reach(model.pods["x/a"].netns, service_ip, 80, "tcp", "a",
                what="x/a -> its own Service (hairpin)")
    model.reach(model.pods["y/b"].netns, service_ip, 80, "tcp", None,
                what="y/b -> the Service of the isolated x/a")


def test_host_network_pods_are_never_selected(model: Model) -> None:
    node = model.sandbox.nodes[0]
    manifest = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "hostnet", "namespace": "x", "labels": {"pod": "hostnet"}},
                "spec": {"hostNetwork": True, "nodeName": node.name,
                         "terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "serve", "image": "kovn.io/serve-hostname",
                                         "ports": [{"containerPort": HOSTNET_PORT}]}]}}
    model.cluster.create_pod(manifest)
    try:
        eventually(lambda: condition(model.cluster.pod("x", "hostnet"), "Ready")
                   .get("status") == "True", 60, "host-network pod Ready")
        assert find_record(model.sandbox.kubelet_states(), "x", "hostnet") is not None
        model.apply_policy("x", "deny-ingress", {"podSelector": ALL})
        model.apply_policy("y", "from-hostnet", {
            "podSelector": ALL, "ingress": [{"from": [
                {"namespaceSelector": sel(ns="x"), "podSelector": sel(pod="hostnet")}]}]})
        model.check(reach(model).expect_ingress(["x", "y"], False))
        model.reach(model.pods["z/b"].netns, join_ip(model, node.name), HOSTNET_PORT, "tcp",
                    "hostnet", what="z/b -> the host-network pod in isolated x")
        holding = {name for name, addresses in address_sets(model.sandbox.nb_remote).items()
                   if node.underlay_ip in addresses}
        assert not holding, f"the host-network pod's IP is in address sets {holding}"
    finally:
        model.cluster.delete_pod("x", "hostnet")
        eventually(lambda: model.cluster.pod("x", "hostnet") is None, 60, "hostnet gone")
