"""controller.subnets: parsing Subnet objects, validating them together, binding namespaces."""

from __future__ import annotations

from typing import Any

import pytest

from contract.podnetwork import LOGICAL_SWITCH
from controller.config import ClusterConfig
from controller.subnets import (
    Binding,
    Problem,
    SpecError,
    SubnetSpec,
    binding,
    parse_subnet,
    validate,
)

RESERVED = ClusterConfig().reserved_ranges()  # join 100.64.0.0/16, service 10.96.0.0/16
T1, T2, T3 = "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"


def obj(name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "kovn.io/v1", "kind": "Subnet",
            "metadata": {"name": name, **meta}, "spec": spec}


def sub(name: str, cidr: str, created: str = "", **kw: Any) -> SubnetSpec:
    gateway = kw.pop("gateway", None) or parse_subnet(obj(name, {"cidrBlock": cidr})).gateway
    return SubnetSpec(name=name, cidr=cidr, gateway=gateway, created=created, **kw)


# --- parse_subnet --------------------------------------------------------------------------------
def test_parse_defaults() -> None:
    spec = parse_subnet(obj("blue", {"cidrBlock": "10.17.0.0/16"}))
    assert spec == SubnetSpec(name="blue", cidr="10.17.0.0/16", gateway="10.17.0.1")
    assert spec.exclude_ips == () and spec.namespaces == () and spec.allow_subnets == ()
    assert not spec.private and not spec.nat_outgoing and not spec.default
    assert spec.gateway_type == "distributed"
    assert spec.created == "" and not spec.deleting
    assert spec.prefixlen == 16
    assert str(spec.network) == "10.17.0.0/16"


def test_parse_every_field() -> None:
    spec = parse_subnet(obj(
        "blue",
        {"cidrBlock": "10.17.0.0/24", "gateway": "10.17.0.254",
         "excludeIps": ["10.17.0.2", "10.17.0.10..10.17.0.20"], "namespaces": ["a", "b"],
         "private": True, "allowSubnets": ["10.18.0.0/16"], "natOutgoing": True,
         "gatewayType": "centralized", "default": True},
        creationTimestamp=T1, deletionTimestamp=T2,
    ))
    assert spec == SubnetSpec(
        name="blue", cidr="10.17.0.0/24", gateway="10.17.0.254",
        exclude_ips=("10.17.0.2", "10.17.0.10..10.17.0.20"), namespaces=("a", "b"),
        private=True, allow_subnets=("10.18.0.0/16",), nat_outgoing=True,
        gateway_type="centralized", default=True, created=T1, deleting=True,
    )


@pytest.mark.parametrize(
    ("spec", "gateway"),
    [
        ({"cidrBlock": "10.17.0.0/16"}, "10.17.0.1"),
        ({"cidrBlock": "10.17.0.0/16", "gateway": ""}, "10.17.0.1"),
        ({"cidrBlock": "10.17.0.0/16", "gateway": None}, "10.17.0.1"),
        ({"cidrBlock": "192.168.4.0/30"}, "192.168.4.1"),
        ({"cidrBlock": "10.17.0.0/16", "gateway": "10.17.255.254"}, "10.17.255.254"),
    ],
)
def test_parse_gateway(spec: dict[str, Any], gateway: str) -> None:
    assert parse_subnet(obj("s", spec)).gateway == gateway


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"cidrBlock": "10.17.0.5/16"}, ["host bits", "did you mean 10.17.0.0/16"]),
        ({"cidrBlock": "10.16.1.0/16"}, ["host bits", "did you mean 10.16.0.0/16"]),
        ({"cidrBlock": "10.17.0.0/31"}, ["too small", "/30"]),
        ({"cidrBlock": "10.17.0.0/32"}, ["too small", "/30"]),
        ({"cidrBlock": "10.17.0.0/33"}, ["cidrBlock"]),
        ({"cidrBlock": "banana"}, ["cidrBlock"]),
        ({"cidrBlock": "fd00::/64"}, ["cidrBlock"]),
        ({"cidrBlock": ""}, ["cidrBlock"]),
        ({}, ["cidrBlock"]),
    ],
)
def test_parse_invalid_cidr(spec: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(SpecError) as err:
        parse_subnet(obj("s", spec))
    assert err.value.problem.reason == "InvalidCIDR"
    assert isinstance(err.value, ValueError)
    for word in words:
        assert word in str(err.value)
        assert word in err.value.problem.message


def test_parse_null_spec() -> None:
    with pytest.raises(SpecError):
        parse_subnet({"metadata": {"name": "s"}, "spec": None})


# --- validate ------------------------------------------------------------------------------------
def reasons(problems: dict[str, list[Problem]]) -> dict[str, list[str]]:
    return {name: [p.reason for p in ps] for name, ps in problems.items()}


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        pytest.param(
            [sub("a", "10.16.0.0/16", T1), sub("b", "10.17.0.0/16", T2, namespaces=("x",)),
             sub("c", "10.18.0.0/24", T3, exclude_ips=("10.18.0.2", "10.18.0.10..10.18.0.20"),
                 gateway="10.18.0.254")],
            {"a": [], "b": [], "c": []},
            id="all-valid",
        ),
        pytest.param(
            [sub("a", "10.16.0.0/16", T1, gateway="10.17.0.1")],
            {"a": ["GatewayOutsideCIDR"]}, id="gateway-outside",
        ),
        pytest.param(
            [sub("a", "10.16.0.0/16", T1, gateway="10.16.0.0")],
            {"a": ["GatewayOutsideCIDR"]}, id="gateway-is-network-address",
        ),
        pytest.param(
            [sub("a", "10.16.0.0/16", T1, gateway="10.16.255.255")],
            {"a": ["GatewayOutsideCIDR"]}, id="gateway-is-broadcast",
        ),
        pytest.param(
            [sub("a", "10.16.0.0/16", T1, gateway="nope")],
            {"a": ["InvalidGateway"]}, id="gateway-not-an-ip",
        ),
        pytest.param(
            [sub("a", "10.16.0.0/16", T1, exclude_ips=("10.17.0.5",))],
            {"a": ["ExcludeIpsOutsideCIDR"]}, id="exclude-outside",
        ),
        pytest.param(
            [sub("a", "10.16.0.0/16", T1, exclude_ips=("10.16.255.0..10.17.0.5",))],
            {"a": ["ExcludeIpsOutsideCIDR"]}, id="exclude-range-straddles",
        ),
        pytest.param(
            [sub("a", "10.16.0.0/16", T1, exclude_ips=("10.16.0.9..10.16.0.2",))],
            {"a": ["InvalidExcludeIps"]}, id="exclude-reversed",
        ),
        pytest.param(
            [sub("a", "10.16.0.0/16", T1, exclude_ips=("garbage",))],
            {"a": ["InvalidExcludeIps"]}, id="exclude-garbage",
        ),
        pytest.param(
            [sub("a", "10.16.0.0/16", T1, allow_subnets=("10.17.0.0/16", "nope"))],
            {"a": ["InvalidAllowSubnets"]}, id="allow-subnets-garbage",
        ),
        pytest.param(
            [sub("a", "10.16.0.0/16", T1), sub("b", "10.16.128.0/24", T2)],
            {"a": [], "b": ["OverlappingCIDR"]}, id="overlap-newer-loses",
        ),
        pytest.param(
            # listed in the other order, and the newer one is the larger: still the newer loses
            [sub("b", "10.16.0.0/12", T2), sub("a", "10.16.128.0/24", T1)],
            {"a": [], "b": ["OverlappingCIDR"]}, id="overlap-order-independent",
        ),
        pytest.param(
            [sub("a", "10.16.0.0/16", T1), sub("b", "10.16.0.0/16", T2),
             sub("c", "10.16.0.0/24", T3)],
            {"a": [], "b": ["OverlappingCIDR"], "c": ["OverlappingCIDR"]}, id="overlap-three",
        ),
        pytest.param(
            # a subnet without creationTimestamp counts as the newest
            [sub("a", "10.16.0.0/16", ""), sub("b", "10.16.0.0/16", T3)],
            {"a": ["OverlappingCIDR"], "b": []}, id="overlap-no-timestamp-is-newest",
        ),
        pytest.param(
            # same timestamp: the name decides, deterministically
            [sub("b", "10.16.0.0/16", T1), sub("a", "10.16.0.0/16", T1)],
            {"a": [], "b": ["OverlappingCIDR"]}, id="overlap-tie-by-name",
        ),
        pytest.param(
            [sub("a", "100.64.0.0/24", T1)],
            {"a": ["OverlapsReservedRange"]}, id="overlaps-join",
        ),
        pytest.param(
            [sub("a", "10.0.0.0/8", T1)],
            {"a": ["OverlapsReservedRange"]}, id="contains-service-range",
        ),
        pytest.param(
            [sub("a", "10.96.10.0/24", T1), sub("b", "10.97.0.0/16", T2)],
            {"a": ["OverlapsReservedRange"], "b": []}, id="inside-service-range",
        ),
        pytest.param(
            [sub("a", "10.16.0.0/16", T1, namespaces=("x", "y")),
             sub("b", "10.17.0.0/16", T2, namespaces=("y",))],
            {"a": [], "b": ["NamespaceConflict"]}, id="namespace-claimed-twice",
        ),
        pytest.param(
            [sub("b", "10.17.0.0/16", T2, namespaces=("x",)),
             sub("a", "10.16.0.0/16", T1, namespaces=("x",)),
             sub("c", "10.18.0.0/16", T3, namespaces=("x", "z"))],
            {"a": [], "b": ["NamespaceConflict"], "c": ["NamespaceConflict"]},
            id="namespace-claimed-thrice",
        ),
        pytest.param(
            # an invalid older subnet claims nothing: the newer one keeps the namespace
            [sub("a", "10.16.0.0/16", T1, namespaces=("x",), gateway="10.99.0.1"),
             sub("b", "10.17.0.0/16", T2, namespaces=("x",))],
            {"a": ["GatewayOutsideCIDR"], "b": []}, id="invalid-older-claims-nothing",
        ),
        pytest.param(
            [sub("a", "10.16.0.0/16", T1),
             sub("b", "10.16.0.0/24", T2, gateway="10.99.0.1", namespaces=("x",))],
            {"a": [], "b": ["GatewayOutsideCIDR", "OverlappingCIDR"]}, id="several-problems",
        ),
        pytest.param([], {}, id="nothing"),
    ],
)
def test_validate(specs: list[SubnetSpec], expected: dict[str, list[str]]) -> None:
    assert reasons(validate(specs, RESERVED)) == expected


def test_validate_messages_say_what_to_fix() -> None:
    problems = validate(
        [sub("a", "10.16.0.0/16", T1, namespaces=("x",)),
         sub("b", "10.16.0.0/24", T2, gateway="10.99.0.1"),
         sub("c", "10.17.0.0/16", T3, namespaces=("x",), exclude_ips=("10.18.0.1..10.18.0.5",)),
         sub("d", "100.64.0.0/16", T3)],
        RESERVED,
    )
    text = {name: " ".join(p.message for p in ps) for name, ps in problems.items()}
    assert "10.16.0.1" in text["b"]  # a usable gateway is suggested
    assert "subnet a" in text["b"] and "10.16.0.0/16" in text["b"]
    assert "10.18.0.1..10.18.0.5" in text["c"]
    assert "namespace x" in text["c"] and "subnet a" in text["c"]
    assert "join" in text["d"] and "100.64.0.0/16" in text["d"]


def test_validate_without_reserved_ranges() -> None:
    assert reasons(validate([sub("a", "100.64.0.0/16", T1)], {})) == {"a": []}


def test_default_subnet_of_the_default_config_is_valid() -> None:
    config = ClusterConfig()
    assert config.reserved_ranges() == {"join range": "100.64.0.0/16",
                                      "service range": "10.96.0.0/16"}
    spec = parse_subnet(obj(config.default_subnet, {"cidrBlock": config.default_cidr}))
    assert validate([spec], config.reserved_ranges()) == {config.default_subnet: []}


# --- binding -------------------------------------------------------------------------------------
BINDING = Binding(
    default="ovn-default",
    by_namespace={"team-a": "subnet-a", "team-b": "subnet-b"},
    namespace_annotations={"team-a": "annotated-a", "team-c": "annotated-c"},
)


@pytest.mark.parametrize(
    ("namespace", "pod_annotations", "expected"),
    [
        ("team-a", {LOGICAL_SWITCH: "pod-choice"}, "pod-choice"),  # pod annotation first
        ("team-a", {}, "annotated-a"),  # then the namespace annotation
        ("team-c", {}, "annotated-c"),
        ("team-b", {}, "subnet-b"),  # then Subnet.spec.namespaces
        ("team-b", {LOGICAL_SWITCH: "pod-choice"}, "pod-choice"),
        ("other", {}, "ovn-default"),  # else the default
        ("other", {"unrelated": "x"}, "ovn-default"),
        ("other", {LOGICAL_SWITCH: ""}, "ovn-default"),  # an empty annotation picks nothing
    ],
)
def test_subnet_for(namespace: str, pod_annotations: dict[str, str], expected: str) -> None:
    assert BINDING.subnet_for(namespace, pod_annotations) == expected


def test_binding_from_valid_subnets() -> None:
    valid = [sub("a", "10.16.0.0/16", T1, namespaces=("x", "y")),
             sub("b", "10.17.0.0/16", T2, namespaces=("z",)),
             sub("c", "10.18.0.0/16", T3)]
    bound = binding(valid, "ovn-default", {"w": "c"})
    assert bound == Binding("ovn-default", {"x": "a", "y": "a", "z": "b"}, {"w": "c"})
    assert bound.subnet_for("x", {}) == "a"
    assert bound.subnet_for("z", {}) == "b"
    assert bound.subnet_for("w", {}) == "c"
    assert bound.subnet_for("v", {}) == "ovn-default"


def test_binding_keeps_the_first_claim() -> None:
    bound = binding([sub("a", "10.16.0.0/16", T1, namespaces=("x",)),
                     sub("b", "10.17.0.0/16", T2, namespaces=("x",))], "d", {})
    assert bound.by_namespace == {"x": "a"}


def test_binding_copies_its_input() -> None:
    annotations = {"w": "c"}
    bound = binding([], "d", annotations)
    annotations["w"] = "changed"
    assert bound.subnet_for("w", {}) == "c"


# --- names and ranges kovn keeps for itself -------------------------------------------------------
@pytest.mark.parametrize("name", ["join", "ovn-cluster"])
def test_kovns_own_names_are_refused(name: str) -> None:
    problems = validate([sub(name, "10.55.0.0/24", T1)], RESERVED)
    assert [p.reason for p in problems[name]] == ["ReservedName"]
    assert "pick another name" in problems[name][0].message


def test_node_addresses_are_reserved_ranges() -> None:
    reserved = {**RESERVED, "address of node n1": "203.0.113.11/32"}
    problems = validate([sub("under", "203.0.113.0/24", T1), sub("fine", "10.55.0.0/24", T2)],
                        reserved)
    assert [p.reason for p in problems["under"]] == ["OverlapsReservedRange"]
    assert "node n1" in problems["under"][0].message and problems["fine"] == []
