"""northbound.names: every NB name and external_ids key is a small pure function or constant."""

from __future__ import annotations

import re

import pytest

from northbound import names

OVN_SAFE = re.compile(r"[A-Za-z0-9_]+")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (names.pod_port("default", "web-1"), "default_web-1"),
        (names.pod_port("kube-system", "coredns-5d78c9869d-abcde"),
         "kube-system_coredns-5d78c9869d-abcde"),
        (names.node_port("node1"), "node-node1"),
        (names.node_port("kind-worker.example"), "node-kind-worker.example"),
        (names.router_port(names.CLUSTER_ROUTER, "ovn-default"), "ovn-cluster-ovn-default"),
        (names.router_port(names.CLUSTER_ROUTER, names.JOIN_SWITCH), "ovn-cluster-join"),
        (names.switch_router_port("ovn-default", names.CLUSTER_ROUTER), "ovn-default-ovn-cluster"),
        (names.switch_router_port(names.JOIN_SWITCH, names.CLUSTER_ROUTER), "join-ovn-cluster"),
        (names.subnet_switch("ovn-default"), "ovn-default"),
        (names.gateway_router("node1"), "GR_node1"),
        (names.external_switch("node1"), "ext_node1"),
        (names.gateway_join_port("node1"), "rtoj-GR_node1"),
        (names.join_gateway_port("node1"), "jtor-GR_node1"),
        (names.gateway_external_port("node1"), "rtoe-GR_node1"),
        (names.external_gateway_port("node1"), "etor-GR_node1"),
        (names.localnet_port("node1"), "ln-ext_node1"),
        (names.load_balancer("default", "web", "tcp"), "Service_default/web_TCP"),
        (names.load_balancer("default", "web", "TCP"), "Service_default/web_TCP"),
        (names.load_balancer("kube-system", "kube-dns", "udp"), "Service_kube-system/kube-dns_UDP"),
        (names.load_balancer("ns", "svc", "Sctp"), "Service_ns/svc_SCTP"),
    ],
)
def test_entity_names(name: str, expected: str) -> None:
    assert name == expected


def test_topology_constants() -> None:
    assert names.CLUSTER_ROUTER == "ovn-cluster"
    assert names.JOIN_SWITCH == "join"
    assert names.DEFAULT_SUBNET == "ovn-default"
    assert names.CLUSTER_LB_GROUP == "clusterLBGroup"
    assert names.CLUSTER_LB_GROUP in names.OWNED_LB_GROUPS


# --- load balancer groups: the name is the ownership mark (no external_ids in NB 7.0.0) ---------
@pytest.mark.parametrize(
    ("name", "owner"),
    [
        (names.CLUSTER_LB_GROUP, (names.OwnerType.CLUSTER, names.CLUSTER_OWNER)),
        (names.node_lb_group("node1"), (names.OwnerType.NODE, "node1")),
        (names.node_lb_group("kind-worker.example.com"),
         (names.OwnerType.NODE, "kind-worker.example.com")),
        (names.node_lb_group("a_b"), (names.OwnerType.NODE, "a_b")),
        (names.node_lb_group("nodeLBGroup_x"), (names.OwnerType.NODE, "nodeLBGroup_x")),
    ],
    ids=["cluster", "node", "node-fqdn", "node-underscore", "node-named-like-the-prefix"],
)
def test_lb_group_names_round_trip(name: str, owner: tuple[names.OwnerType, str]) -> None:
    assert names.lb_group_owner(name) == owner
    assert name in names.OWNED_LB_GROUPS
    if owner[0] == names.OwnerType.NODE:
        assert names.node_lb_group(owner[1]) == name == f"nodeLBGroup_{owner[1]}"


@pytest.mark.parametrize(
    "name",
    ["", "hand_group", "clusterlbgroup", "clusterLBGroup ", "nodeLBGroup_", "nodeLBGroup",
     "xnodeLBGroup_n1", "GR_node1", names.load_balancer("ns", "svc", "tcp")],
)
def test_other_lb_group_names_are_not_kovns(name: str) -> None:
    assert names.lb_group_owner(name) is None
    assert name not in names.OWNED_LB_GROUPS


def test_node_lb_group_needs_a_node() -> None:
    with pytest.raises(ValueError, match="node name"):
        names.node_lb_group("")
    assert 42 not in names.OWNED_LB_GROUPS  # type: ignore[operator]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (names.policy_port_group("default", "allow-web"), "kovn_np_default_allow_web"),
        (names.policy_port_group("kube-system", "a.b-c"), "kovn_np_kube_system_a_b_c"),
        (names.default_deny_port_group("my-ns", "ingress"), "kovn_deny_my_ns_ingress"),
        (names.default_deny_port_group("my-ns", "egress"), "kovn_deny_my_ns_egress"),
        (names.peer_address_set("my-ns", "0a1b2c"), "kovn_peer_my_ns_0a1b2c"),
        (names.peer_address_set("", "0a1b2c"), "kovn_peer_all_0a1b2c"),
        (names.named_port_group("ns", "p", "tcp", "serve-80", 80), "kovn_np_ns_p_TCP_serve_80_80"),
    ],
)
def test_policy_names(name: str, expected: str) -> None:
    """Readable prefix, then an 8-hex-digit hash of the exact Kubernetes names."""
    readable, digest = name.rsplit("_", 1)
    assert readable == expected
    assert re.fullmatch(r"[0-9a-f]{8}", digest)


# Names that appear as `@pg` / `$as` in ACL match strings must only hold [A-Za-z0-9_].
_AWKWARD = ["default", "kube-system", "a.b.c", "x--y", "UPPER-lower.9", "ns-ü", "ns-١٢٣"]


@pytest.mark.parametrize("text", _AWKWARD)
@pytest.mark.parametrize(
    "make",
    [
        lambda t: names.policy_port_group(t, t),
        lambda t: names.default_deny_port_group(t, "ingress"),
        lambda t: names.peer_address_set(t, "ab12"),
        lambda t: names.named_port_group(t, t, "udp", t, 53),
    ],
    ids=["policy_port_group", "default_deny_port_group", "peer_address_set",
         "named_port_group"],
)
def test_match_names_are_ovn_safe(make, text: str) -> None:
    assert OVN_SAFE.fullmatch(make(text))


@pytest.mark.parametrize(
    ("make", "a", "b"),
    [
        (names.policy_port_group, ("a-b", "c"), ("a", "b-c")),
        (names.policy_port_group, ("ns", "a.b"), ("ns", "a-b")),
        (names.peer_address_set, ("a-b", "0"), ("a.b", "0")),
    ],
    ids=["namespace-vs-policy-dash", "dot-vs-dash", "namespace-dot-vs-dash"],
)
def test_match_names_are_unambiguous(make, a: tuple[str, ...], b: tuple[str, ...]) -> None:
    assert make(*a) != make(*b)


@pytest.mark.parametrize(
    ("owner_type", "owner", "expected"),
    [
        (names.OwnerType.POD, "default/web-1",
         {"kovn.io/owner-type": "Pod", "kovn.io/owner": "default/web-1"}),
        ("Service", "default/web",
         {"kovn.io/owner-type": "Service", "kovn.io/owner": "default/web"}),
        (names.OwnerType.SUBNET, "ovn-default",
         {"kovn.io/owner-type": "Subnet", "kovn.io/owner": "ovn-default"}),
        (names.OwnerType.CLUSTER, names.CLUSTER_OWNER,
         {"kovn.io/owner-type": "Cluster", "kovn.io/owner": "cluster"}),
    ],
)
def test_owner_ids(owner_type, owner: str, expected: dict[str, str]) -> None:
    ids = names.owner_ids(owner_type, owner)
    assert ids == expected
    assert all(type(v) is str for v in ids.values())  # plain str, not the enum, goes to OVSDB
    assert names.is_owned(ids)


@pytest.mark.parametrize(
    ("external_ids", "owned"),
    [
        ({}, False),
        ({"kovn.io/owner-type": "Pod"}, False),
        ({"kovn.io/owner": "default/web-1"}, False),
        ({"neutron:port_name": "x", "owner": "someone"}, False),
        ({"kovn.io/key": "pg:x|to-lport|1000|ip"}, False),
        ({"kovn.io/owner-type": "Pod", "kovn.io/owner": "default/web-1"}, True),
        ({"kovn.io/owner-type": "Pod", "kovn.io/owner": "default/web-1", "other": "x"}, True),
    ],
)
def test_is_owned(external_ids: dict[str, str], owned: bool) -> None:
    assert names.is_owned(external_ids) is owned


def test_owner_types_are_the_documented_kinds() -> None:
    assert {str(t) for t in names.OwnerType} == {
        "Pod", "Service", "NetworkPolicy", "Node", "Subnet", "Namespace", "QoSPolicy", "PeerSet",
        "Cluster",
    }
    assert names.OWNED_KEYS == ("kovn.io/owner-type", "kovn.io/owner")


def test_acl_names_fit_the_schema_and_stay_distinct() -> None:
    short = names.policy_acl_name("x", "allow-a", "ingress", 0)
    assert short == "x/allow-a:ingress:0"
    long_a = names.policy_acl_name("n" * 40, "p" * 40, "egress", 1)
    long_b = names.policy_acl_name("n" * 40, "p" * 40, "egress", 2)
    assert len(long_a) <= names.ACL_NAME_MAX and long_a != long_b
    assert names.default_deny_acl_name("x", "egress") == "x:default-deny:egress"
