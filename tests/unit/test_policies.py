"""NetworkPolicy translation, table-driven: policy + selected pods -> rows and match strings."""

from __future__ import annotations

from typing import Any

import pytest

from controller import isolation, policies
from controller.peers import ALL_PODS, PeerSpec, canonical_selector, peer_of
from northbound import names
from northbound.rows import ACL, PortGroup

POD_A = policies.SelectedPod("x_a", {("TCP", "web"): 80, ("TCP", "serve-80-tcp"): 80})
POD_B = policies.SelectedPod("x_b", {("TCP", "web"): 81, ("UDP", "dns"): 53})


def policy(spec: dict[str, Any], name: str = "p", namespace: str = "x") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def no_resolve(_peer: PeerSpec, _proto: str, _name: str) -> set[int]:
    raise AssertionError("no egress named port here")


def translate(spec: dict[str, Any], selected=(POD_A, POD_B), resolve=no_resolve,
              logging: policies.Logging = policies.Logging()) -> policies.PolicyRows:  # noqa: B008
    return policies.policy_rows(policy(spec), list(selected), resolve, logging)


def acls(result: policies.PolicyRows) -> list[ACL]:
    return [r for r in result.rows if isinstance(r, ACL)]


def matches(result: policies.PolicyRows) -> list[str]:
    return sorted(a.match for a in acls(result))


PG = names.policy_port_group("x", "p")
PEER_A = PeerSpec("x", None, canonical_selector({"matchLabels": {"pod": "a"}}))
NS_Y = canonical_selector({"matchLabels": {"ns": "y"}})


@pytest.mark.parametrize(("spec", "isolates", "expected"), [
    pytest.param({"podSelector": {}, "policyTypes": ["Ingress"]}, (True, False), [],
                 id="deny-all-ingress"),
    pytest.param({"podSelector": {}, "policyTypes": ["Egress"]}, (False, True), [],
                 id="deny-all-egress"),
    pytest.param({"podSelector": {}, "ingress": [{}]}, (True, False),
                 [f"outport == @{PG} && ip4"], id="allow-all-ingress"),
    pytest.param({"podSelector": {}, "egress": [{}]}, (True, True),
                 [f"inport == @{PG} && ip4"], id="egress-rules-without-types-isolate-both"),
    pytest.param({"podSelector": {}, "egress": []}, (True, False), [],
                 id="empty-egress-list-does-not-isolate-egress"),
    pytest.param({"podSelector": {}, "ingress": [{"from": [
        {"podSelector": {"matchLabels": {"pod": "a"}}}]}]}, (True, False),
        [f"outport == @{PG} && ip4 && ip4.src == ${PEER_A.address_set}"], id="pod-peer"),
    pytest.param({"podSelector": {}, "ingress": [{"ports": [
        {"port": 80}, {"protocol": "UDP", "port": 53}, {"port": 8000, "endPort": 8080},
        {"protocol": "SCTP"}]}]}, (True, False),
        [f"outport == @{PG} && ip4 && ((tcp.dst == 80) || (udp.dst == 53) || "
         "(tcp.dst >= 8000 && tcp.dst <= 8080) || (sctp))"], id="ports-number-range-protocol"),
    pytest.param({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {
        "cidr": "10.16.0.0/16", "except": ["10.16.0.5/32", "10.16.1.0/24"]}}]}]},
        (True, False),
        [f"outport == @{PG} && ip4 && ip4.src == 10.16.0.0/16 && "
         "ip4.src != {10.16.0.5/32, 10.16.1.0/24}"], id="ipblock-except"),
    pytest.param({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [
        {"ipBlock": {"cidr": "2001:db8::/64"}}], "ports": [{"port": 443}]}]}, (False, True),
        [f"inport == @{PG} && ip6 && ip6.dst == 2001:db8::/64 && tcp.dst == 443"],
        id="egress-ipv6-block"),
])
def test_rules_become_allow_related_acls(spec: dict[str, Any], isolates: tuple[bool, bool],
                                         expected: list[str]) -> None:
    result = translate(spec)
    assert (result.ingress, result.egress) == isolates
    assert matches(result) == sorted(expected)
    group = next(r for r in result.rows if isinstance(r, PortGroup) and r.name == PG)
    assert group.ports == {"x_a", "x_b"}
    for acl in acls(result):
        assert acl.action == "allow-related" and acl.priority == 1002
        egress = acl.match.startswith("inport")
        assert acl.direction == ("from-lport" if egress else "to-lport")
        assert acl.options == ({"apply-after-lb": "true"} if egress else {})


def test_peers_are_shared_sets_keyed_by_what_selects() -> None:
    spec = {"podSelector": {}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "y"}},
         "podSelector": {"matchLabels": {"pod": "a"}}},
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}},
        {"podSelector": {"matchLabels": {"pod": "a"}}}]}]}
    result = translate(spec)
    and_peer = PeerSpec("", NS_Y, PEER_A.pod_selector)
    ns_peer = PeerSpec("", NS_Y, "{}")
    assert result.peers == {and_peer, ns_peer, PEER_A}
    sets = ", ".join(sorted(f"${p.address_set}" for p in (and_peer, ns_peer, PEER_A)))
    assert matches(result) == [f"outport == @{PG} && ip4 && ip4.src == {{{sets}}}"]
    # The same peer in another policy is the same set (rows grow with policies + pods).
    other = policies.policy_rows(policy(spec, name="q"), [], no_resolve)
    assert other.peers == result.peers


def test_selectors_have_one_spelling_per_meaning() -> None:
    assert canonical_selector({}) == canonical_selector({"matchLabels": {}})
    a = {"matchExpressions": [{"key": "b", "operator": "In", "values": ["2", "1"]},
                              {"key": "a", "operator": "Exists"}]}
    b = {"matchExpressions": [{"key": "a", "operator": "Exists", "values": []},
                              {"key": "b", "operator": "In", "values": ["1", "2"]}]}
    assert canonical_selector(a) == canonical_selector(b)
    assert peer_of("x", {"podSelector": a}) == peer_of("x", {"podSelector": b})
    assert peer_of("x", {"podSelector": a}) != peer_of("y", {"podSelector": b})
    assert canonical_selector(None) is None


def test_ingress_named_port_resolves_on_each_selected_pod() -> None:
    result = translate({"podSelector": {}, "ingress": [{"ports": [{"port": "web"}]}]})
    g80 = names.named_port_group("x", "p", "TCP", "web", 80)
    g81 = names.named_port_group("x", "p", "TCP", "web", 81)
    groups = {r.name: r.ports for r in result.rows if isinstance(r, PortGroup)}
    assert groups[g80] == {"x_a"} and groups[g81] == {"x_b"}
    assert matches(result) == sorted([f"outport == @{g80} && ip4 && tcp.dst == 80",
                                      f"outport == @{g81} && ip4 && tcp.dst == 81"])
    # Only on the rule's protocol: `web` is TCP on both pods, so UDP `web` opens nothing.
    udp = translate({"podSelector": {}, "ingress": [{"ports": [{"port": "web",
                                                                "protocol": "UDP"}]}]})
    assert matches(udp) == []
    # All ACLs hang on the policy's group, whichever group they match on.
    assert {a.port_group for a in acls(result)} == {PG}


def test_egress_named_port_resolves_on_the_destination_pods() -> None:
    asked = []

    def resolve(peer: PeerSpec, proto: str, name: str) -> set[int]:
        asked.append((peer, proto, name))
        return {8080, 9090} if peer == ALL_PODS else {8080}

    result = translate({"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"ports": [{"port": "http"}]},
        {"to": [{"podSelector": {"matchLabels": {"pod": "a"}}}], "ports": [{"port": "http"}]},
    ]}, resolve=resolve)
    assert asked == [(ALL_PODS, "TCP", "http"), (PEER_A, "TCP", "http")]
    named = {p for p in result.peers if p.port is not None}
    assert named == {PeerSpec("", "{}", "{}", ("TCP", "http", 8080)),
                     PeerSpec("", "{}", "{}", ("TCP", "http", 9090)),
                     PeerSpec("x", None, PEER_A.pod_selector, ("TCP", "http", 8080))}
    assert all(m.endswith(("tcp.dst == 8080", "tcp.dst == 9090")) for m in matches(result))
    assert len(matches(result)) == 3


def test_acls_name_their_policy_direction_and_rule() -> None:
    result = translate({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                        "ingress": [{}, {"ports": [{"port": 81}]}], "egress": [{}]},
                       logging=policies.Logging(allow="info"))
    seen = {(a.extra_ids[names.DIRECTION_KEY], a.extra_ids[names.RULE_KEY], a.name)
            for a in acls(result)}
    assert seen == {("ingress", "0", "x/p:ingress:0"), ("ingress", "1", "x/p:ingress:1"),
                    ("egress", "0", "x/p:egress:0")}
    for acl in acls(result):
        assert acl.extra_ids[names.ACL_ROLE_KEY] == "policy"
        assert acl.extra_ids[names.POLICY_KEY] == "x/p"
        assert (acl.log, acl.severity, acl.meter) == (True, "info", names.ACL_LOG_METER)
        assert acl.owner == policies.policy_owner("x/p")


def test_identical_rules_give_one_acl() -> None:
    assert len(acls(translate({"podSelector": {}, "ingress": [{}, {}]}))) == 1


@pytest.mark.parametrize("spec", [
    {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}},
    {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]},
    {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8",
                                                           "except": ["11.0.0.0/8"]}}]}]},
    {"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 79}]}]},
    {"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]},
    {"podSelector": {}, "policyTypes": ["Sideways"]},
    {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchExpressions": [
        {"key": "a", "operator": "In", "values": []}]}}]}]},
])
def test_what_cannot_be_honoured_exactly_is_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        translate(spec)


def test_namespace_default_deny_and_what_it_still_lets_through() -> None:
    rows = isolation.namespace_rows("x", {"x_a"}, {"x_b"}, policies.Logging(deny="warning"))
    groups = {r.name: r.ports for r in rows if isinstance(r, PortGroup)}
    deny_in = names.default_deny_port_group("x", "ingress")
    deny_out = names.default_deny_port_group("x", "egress")
    assert groups == {deny_in: {"x_a"}, deny_out: {"x_b"}}
    by_match = {a.match: a for a in rows if isinstance(a, ACL)}
    assert {m: (a.priority, a.action) for m, a in by_match.items()} == {
        f"outport == @{deny_in}": (1000, "drop"),
        f"outport == @{deny_in} && (arp || nd)": (1001, "allow"),
        f"outport == @{deny_in} && ip4.src == $kovn_nodes": (1001, "allow-related"),
        f"outport == @{deny_in} && ip4.src == 169.254.169.5": (1001, "allow-related"),
        f"inport == @{deny_out}": (1000, "drop"),
        f"inport == @{deny_out} && (arp || nd)": (1001, "allow"),
    }
    drop = by_match[f"inport == @{deny_out}"]
    assert drop.options == {"apply-after-lb": "true"} and drop.name == "x:default-deny:egress"
    assert (drop.log, drop.severity, drop.extra_ids[names.ACL_ROLE_KEY]) == (
        True, "warning", "default-deny")
    assert not by_match[f"inport == @{deny_out} && (arp || nd)"].log
    assert isolation.namespace_rows("x", (), ()) == []


@pytest.mark.parametrize(("annotation", "expected"), [
    (None, policies.Logging()),
    ('{"deny": "info", "allow": "off"}', policies.Logging(deny="info")),
    ('{"allow": "DEBUG"}', policies.Logging(allow="debug")),
])
def test_acl_logging_annotation(annotation: str | None, expected: policies.Logging) -> None:
    notes = {isolation.ACL_LOGGING: annotation} if annotation else {}
    assert isolation.logging_of({"metadata": {"annotations": notes}}) == expected


@pytest.mark.parametrize("annotation", ["yes", '["info"]', '{"deny": "loud"}'])
def test_bad_acl_logging_annotation_says_what_is_expected(annotation: str) -> None:
    with pytest.raises(ValueError, match="acl-logging"):
        isolation.logging_of({"metadata": {"annotations": {isolation.ACL_LOGGING: annotation}}})
