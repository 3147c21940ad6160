"""controller.qos, table-driven: annotations, QoSPolicy validation, Subnet defaults, who wins,
and the QoS rows with their match strings and direction."""

from __future__ import annotations

from typing import Any

import pytest

from controller import qos
from controller.qos import EGRESS, INGRESS, Bandwidth, Limit, PodQoS, QoSPolicySpec
from northbound import names
from northbound.rows import QoS

T1, T2, T3 = "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"
KO_IN, KO_OUT = "ovn.kubernetes.io/ingress_rate", "ovn.kubernetes.io/egress_rate"
STD_IN, STD_OUT = "kubernetes.io/ingress-bandwidth", "kubernetes.io/egress-bandwidth"
BURST_IN, BURST_OUT = "kovn.io/ingress-burst", "kovn.io/egress-burst"


def policy(spec: dict[str, Any], name: str = "p", created: str = T1) -> dict[str, Any]:
    return {"apiVersion": "kovn.io/v1", "kind": "QoSPolicy",
            "metadata": {"name": name, "namespace": "x", "creationTimestamp": created},
            "spec": spec}


def valid(spec: dict[str, Any], name: str = "p", created: str = T1) -> QoSPolicySpec:
    parsed, problems = qos.parse_policy(policy(spec, name, created))
    assert not problems and parsed is not None
    return parsed


def dflt(rate_kbps: int) -> int:
    return qos.default_burst_kbits(rate_kbps)


# --- quantities and the default burst ----------------------------------------------------------
@pytest.mark.parametrize(("text", "value"), [
    ("10M", 10_000_000), ("500k", 500_000), ("1G", 10**9), ("1Mi", 1_048_576),
    ("1Ki", 1024), ("2.5M", 2_500_000), ("1e6", 10**6), ("1E3", 1000), ("100", 100),
    (" 3M ", 3_000_000), ("1500m", 2), (".5k", 500), ("1P", 10**15),
])
def test_parse_quantity(text: str, value: int) -> None:
    assert qos.parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "M", "10 M", "10Mb", "10mi", "ten", "1.2.3M", "10Mbps"])
def test_parse_quantity_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        qos.parse_quantity(text)


@pytest.mark.parametrize(("rate", "burst"), [
    (10_000, 2_500), (50_000, 12_500), (1_000, 250), (500, 125), (1, 24), (80, 24),
    (qos.OVN_MAX, 1_073_741_824),
])
def test_default_burst(rate: int, burst: int) -> None:
    assert qos.default_burst_kbits(rate) == burst


# --- annotations ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("annotations", "ingress", "egress"), [
    ({}, None, None),
    ({KO_IN: "3", KO_OUT: "1"}, Limit(3000, dflt(3000), f"annotation {KO_IN}"),
     Limit(1000, dflt(1000), f"annotation {KO_OUT}")),
    ({KO_IN: "0.5"}, Limit(500, 125, f"annotation {KO_IN}"), None),
    ({KO_OUT: "0.0001"}, None, Limit(1, dflt(1), f"annotation {KO_OUT}")),  # never 0 = none
    ({STD_IN: "10M", STD_OUT: "500k"}, Limit(10_000, 2_500, f"annotation {STD_IN}"),
     Limit(500, 125, f"annotation {STD_OUT}")),
    ({STD_IN: "1Mi"}, Limit(1049, dflt(1049), f"annotation {STD_IN}"), None),
    ({STD_OUT: "1P"}, None, Limit(qos.OVN_MAX, dflt(qos.OVN_MAX), f"annotation {STD_OUT}")),
    # both kinds for one direction: Kube-OVN's wins; the other direction is independent
    ({KO_IN: "3", STD_IN: "10M", STD_OUT: "2M"}, Limit(3000, dflt(3000), f"annotation {KO_IN}"),
     Limit(2000, dflt(2000), f"annotation {STD_OUT}")),
    # bursts (Mbit) apply to whichever rate annotation is in force
    ({KO_IN: "10", BURST_IN: "4"},
     Limit(10_000, 4000, f"annotation {KO_IN} (burst {BURST_IN})"), None),
    ({STD_OUT: "10M", BURST_OUT: "0.5"}, None,
     Limit(10_000, 500, f"annotation {STD_OUT} (burst {BURST_OUT})")),
    ({KO_IN: "10", BURST_IN: "0"}, Limit(10_000, 2_500, f"annotation {KO_IN}"), None),
    # "0" is Kube-OVN's "no limit": explicitly unlimited
    ({KO_OUT: "0"}, None, Limit(0, 0, f"annotation {KO_OUT}=0 (unlimited)")),
])
def test_annotation_limits(annotations: dict[str, str], ingress: Limit | None,
                           egress: Limit | None) -> None:
    limits, problems = qos.annotation_limits(annotations)
    assert problems == []
    assert limits.get(INGRESS) == ingress
    assert limits.get(EGRESS) == egress


@pytest.mark.parametrize(("annotations", "reason", "text", "left"), [
    ({KO_IN: "fast"}, "InvalidQoSAnnotation", KO_IN, {}),
    ({KO_IN: "-1"}, "InvalidQoSAnnotation", ">= 0", {}),
    ({KO_IN: "nan"}, "InvalidQoSAnnotation", KO_IN, {}),
    ({KO_IN: "inf"}, "InvalidQoSAnnotation", KO_IN, {}),
    ({STD_IN: "10 M"}, "InvalidQoSAnnotation", STD_IN, {}),
    ({STD_IN: "999"}, "InvalidQoSAnnotation", "1k..1P", {}),
    ({STD_OUT: "2P"}, "InvalidQoSAnnotation", "1k..1P", {}),
    ({BURST_IN: "3"}, "BurstWithoutRate", BURST_IN, {}),
    ({KO_OUT: "5", BURST_OUT: "lots"}, "InvalidQoSAnnotation", BURST_OUT,
     {EGRESS: Limit(5000, dflt(5000), f"annotation {KO_OUT}")}),
    # a bad Kube-OVN value falls back to a good standard one for that direction
    ({KO_IN: "x", STD_IN: "1M"}, "InvalidQoSAnnotation", KO_IN,
     {INGRESS: Limit(1000, dflt(1000), f"annotation {STD_IN}")}),
])
def test_bad_annotations_are_problems_and_ignored(annotations: dict[str, str], reason: str,
                                                  text: str, left: dict[str, Limit]) -> None:
    limits, problems = qos.annotation_limits(annotations)
    assert [p.reason for p in problems] == [reason]
    assert text in problems[0].message
    assert limits == left


# --- QoSPolicy -----------------------------------------------------------------------------------
def test_parse_policy_every_field() -> None:
    spec = valid({"podSelector": {"matchLabels": {"app": "web"}},
                  "ingress": {"rate": 10, "burst": 3}, "egress": {"rate": 0.5},
                  "priority": 7})
    assert spec == QoSPolicySpec(namespace="x", name="p", selector='{"matchLabels":{"app":"web"}}',
                                 ingress=Bandwidth(10.0, 3.0), egress=Bandwidth(0.5),
                                 priority=7, created=T1)
    assert spec.key == "x/p"
    assert spec.source() == "QoSPolicy x/p (priority 7)"


def test_parse_policy_defaults() -> None:
    spec = valid({"podSelector": {}, "egress": {"rate": 1, "burst": 0}})
    assert (spec.selector, spec.ingress, spec.priority) == ("{}", None, 0)
    assert spec.egress == Bandwidth(1.0, None)  # burst 0: the default
    assert spec.egress.limit("s") == Limit(1000, 250, "s")


@pytest.mark.parametrize(("spec", "reasons"), [
    ({"podSelector": {}, "ingress": {"rate": -5}}, ["NegativeRate"]),
    ({"podSelector": {}, "ingress": {"rate": 0}}, ["InvalidRate"]),
    ({"podSelector": {}, "ingress": {"rate": "10M"}}, ["InvalidRate"]),
    ({"podSelector": {}, "ingress": {"rate": True}}, ["InvalidRate"]),
    ({"podSelector": {}, "ingress": {}}, ["InvalidRate"]),
    ({"podSelector": {}, "ingress": 10}, ["InvalidRate"]),
    ({"podSelector": {}, "egress": {"rate": 100_001}}, ["AbsurdRate"]),
    ({"podSelector": {}, "egress": {"rate": 10, "burst": -1}}, ["NegativeBurst"]),
    ({"podSelector": {}, "egress": {"rate": 10, "burst": 1e6}}, ["AbsurdBurst"]),
    ({"podSelector": {}, "egress": {"rate": 10, "burst": "x"}}, ["InvalidBurst"]),
    ({"podSelector": {}}, ["NoLimit"]),
    ({"podSelector": {}, "ingress": None, "egress": None}, ["NoLimit"]),
    ({"ingress": {"rate": 1}}, ["BadSelector"]),
    ({"podSelector": None, "ingress": {"rate": 1}}, ["BadSelector"]),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]},
      "ingress": {"rate": 1}}, ["BadSelector"]),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
      "ingress": {"rate": 1}}, ["BadSelector"]),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]},
      "ingress": {"rate": 1}}, ["BadSelector"]),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists",
                                            "values": ["1"]}]},
      "ingress": {"rate": 1}}, ["BadSelector"]),
    ({"podSelector": {"matchExpressions": [{"operator": "Exists"}]},
      "ingress": {"rate": 1}}, ["BadSelector"]),
    ({"podSelector": {"matchLabels": {"a": 1}}, "ingress": {"rate": 1}}, ["BadSelector"]),
    ({"podSelector": {"matchExpressions": {"key": "a"}}, "ingress": {"rate": 1}},
     ["BadSelector"]),
    ({"podSelector": {}, "ingress": {"rate": 1}, "priority": -1}, ["InvalidPriority"]),
    ({"podSelector": {}, "ingress": {"rate": 1}, "priority": "high"}, ["InvalidPriority"]),
    ({"podSelector": {}, "ingress": {"rate": 1}, "priority": 1.5}, ["InvalidPriority"]),
    # every problem at once, so one fix-up round is enough
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
      "ingress": {"rate": -1}, "egress": {"rate": 1e9}, "priority": -2},
     ["BadSelector", "NegativeRate", "AbsurdRate", "InvalidPriority"]),
])
def test_invalid_policies(spec: dict[str, Any], reasons: list[str]) -> None:
    parsed, problems = qos.parse_policy(policy(spec))
    assert parsed is None
    assert [p.reason for p in problems] == reasons
    assert all(p.message for p in problems)


def test_selector_is_canonical() -> None:
    a = valid({"podSelector": {"matchExpressions": [
        {"key": "b", "operator": "In", "values": ["2", "1"]},
        {"key": "a", "operator": "Exists"}]}, "ingress": {"rate": 1}})
    b = valid({"podSelector": {"matchLabels": {}, "matchExpressions": [
        {"key": "a", "operator": "Exists", "values": []},
        {"key": "b", "operator": "In", "values": ["1", "2"]}]}, "ingress": {"rate": 1}})
    assert a.selector == b.selector


# --- Subnet defaults -----------------------------------------------------------------------------
@pytest.mark.parametrize(("qos_spec", "defaults", "reasons"), [
    (None, {}, []),
    ({}, {}, []),
    ({"ingressRate": 0, "egressRate": 0}, {}, []),
    ({"ingressRate": 20}, {INGRESS: Bandwidth(20.0)}, []),
    ({"ingressRate": 20, "egressRate": 5, "egressBurst": 2},
     {INGRESS: Bandwidth(20.0), EGRESS: Bandwidth(5.0, 2.0)}, []),
    ({"ingressRate": -1, "egressRate": 5}, {EGRESS: Bandwidth(5.0)}, ["NegativeRate"]),
    ({"egressRate": 10**6}, {}, ["AbsurdRate"]),
])
def test_subnet_defaults(qos_spec: dict[str, Any] | None, defaults: dict[str, Bandwidth],
                         reasons: list[str]) -> None:
    subnet = {"metadata": {"name": "blue"}, "spec": {"cidrBlock": "10.17.0.0/16"}}
    if qos_spec is not None:
        subnet["spec"]["qos"] = qos_spec
    got, problems = qos.subnet_defaults(subnet)
    assert got == defaults
    assert [p.reason for p in problems] == reasons


# --- precedence ----------------------------------------------------------------------------------
LOW = valid({"podSelector": {}, "ingress": {"rate": 30}, "egress": {"rate": 31}},
            name="low", created=T1)
HIGH = valid({"podSelector": {}, "ingress": {"rate": 20}, "priority": 10}, name="high",
             created=T3)
HIGH_OLD = valid({"podSelector": {}, "ingress": {"rate": 21}, "priority": 10},
                 name="zz-old", created=T2)
HIGH_SAME_AGE = valid({"podSelector": {}, "ingress": {"rate": 22}, "priority": 10},
                      name="aa", created=T3)
SUBNET = {INGRESS: Bandwidth(50.0), EGRESS: Bandwidth(51.0, 4.0)}
ANN = {KO_IN: "5"}


def rate(result: PodQoS, direction: str) -> tuple[int, str] | None:
    limit = result.get(direction)
    return None if limit is None else (limit.rate_kbps, limit.source)


@pytest.mark.parametrize(("annotations", "policies", "subnet", "ingress", "egress"), [
    # nothing applies
    ({}, [], None, None, None),
    # the Subnet default when nothing else does, per direction
    ({}, [], SUBNET, (50_000, "Subnet blue default"), (51_000, "Subnet blue default")),
    # a policy over the Subnet default, per direction: HIGH sets only ingress
    ({}, [HIGH], SUBNET, (20_000, "QoSPolicy x/high (priority 10)"),
     (51_000, "Subnet blue default")),
    # higher priority over lower (ingress); egress from the only policy setting it
    ({}, [LOW, HIGH], SUBNET, (20_000, "QoSPolicy x/high (priority 10)"),
     (31_000, "QoSPolicy x/low (priority 0)")),
    # order of the candidates does not matter
    ({}, [HIGH, LOW], None, (20_000, "QoSPolicy x/high (priority 10)"),
     (31_000, "QoSPolicy x/low (priority 0)")),
    # equal priority: the oldest wins, whatever the names
    ({}, [HIGH, HIGH_OLD], None, (21_000, "QoSPolicy x/zz-old (priority 10)"), None),
    # equal priority and age: by name
    ({}, [HIGH, HIGH_SAME_AGE], None, (22_000, "QoSPolicy x/aa (priority 10)"), None),
    # the annotation over every policy, for its direction only
    (ANN, [LOW, HIGH], SUBNET, (5_000, f"annotation {KO_IN}"),
     (31_000, "QoSPolicy x/low (priority 0)")),
    (ANN, [], SUBNET, (5_000, f"annotation {KO_IN}"), (51_000, "Subnet blue default")),
    # a bad annotation falls through to the policy
    ({KO_IN: "oops"}, [HIGH], None, (20_000, "QoSPolicy x/high (priority 10)"), None),
    # Kube-OVN's "0" = unlimited beats the policy and the Subnet default
    ({KO_OUT: "0"}, [LOW], SUBNET, (30_000, "QoSPolicy x/low (priority 0)"),
     (0, f"annotation {KO_OUT}=0 (unlimited)")),
])
def test_precedence(annotations: dict[str, str], policies: list[QoSPolicySpec],
                    subnet: dict[str, Bandwidth] | None, ingress: tuple[int, str] | None,
                    egress: tuple[int, str] | None) -> None:
    result = qos.resolve(annotations, policies, "blue", subnet)
    assert rate(result, INGRESS) == ingress
    assert rate(result, EGRESS) == egress


@pytest.mark.parametrize(("annotations", "policies", "winners"), [
    ({}, [], set()),
    ({}, [LOW], {"x/low"}),
    ({}, [LOW, HIGH], {"x/low", "x/high"}),  # each wins one direction
    ({}, [LOW, HIGH, HIGH_OLD], {"x/low", "x/zz-old"}),
    (ANN, [LOW, HIGH], {"x/low"}),  # the annotation took ingress from HIGH
    ({KO_IN: "1", KO_OUT: "1"}, [LOW, HIGH], set()),
])
def test_policies_in_force(annotations: dict[str, str], policies: list[QoSPolicySpec],
                           winners: set[str]) -> None:
    assert qos.resolve(annotations, policies, "blue", SUBNET).policies == winners


def test_removing_the_winner_hands_over() -> None:
    """What happens when the winning source goes: the next one takes over."""
    assert rate(qos.resolve(ANN, [LOW, HIGH], "blue", SUBNET), INGRESS)[0] == 5_000
    assert rate(qos.resolve({}, [LOW, HIGH], "blue", SUBNET), INGRESS)[0] == 20_000
    assert rate(qos.resolve({}, [LOW], "blue", SUBNET), INGRESS)[0] == 30_000
    assert rate(qos.resolve({}, [], "blue", SUBNET), INGRESS)[0] == 50_000
    assert rate(qos.resolve({}, [], "blue", {}), INGRESS) is None


def test_bursts_follow_their_source() -> None:
    result = qos.resolve({KO_IN: "10", BURST_IN: "1"}, [], "blue", SUBNET)
    assert result.ingress == Limit(10_000, 1_000, f"annotation {KO_IN} (burst {BURST_IN})")
    assert result.egress == Limit(51_000, 4_000, "Subnet blue default")
    burst = valid({"podSelector": {}, "ingress": {"rate": 8, "burst": 2}})
    assert qos.resolve({}, [burst]).ingress == Limit(8_000, 2_000, burst.source())
    assert qos.resolve({}, [LOW]).ingress == Limit(30_000, 7_500, LOW.source())


def test_annotation_problems_are_reported() -> None:
    result = qos.resolve({KO_IN: "x", BURST_OUT: "1"}, [HIGH])
    assert [p.reason for p in result.problems] == ["InvalidQoSAnnotation", "BurstWithoutRate"]


# --- rows ----------------------------------------------------------------------------------------
def test_rows_direction_and_match() -> None:
    result = PodQoS(ingress=Limit(10_000, 2_500, "QoSPolicy x/p (priority 1)"),
                    egress=Limit(5_000, 1_250, f"annotation {KO_OUT}"))
    rows = qos.qos_rows("x/a", "ovn-default", "x_a", result)
    owner = qos.pod_owner("x/a")
    assert rows == [
        QoS(owner=owner, switch="ovn-default", direction="to-lport", priority=qos.QOS_PRIORITY,
            match='outport == "x_a"', bandwidth={"rate": 10_000, "burst": 2_500},
            extra_ids={names.DIRECTION_KEY: "ingress",
                       qos.SOURCE_KEY: "QoSPolicy x/p (priority 1)"}),
        QoS(owner=owner, switch="ovn-default", direction="from-lport",
            priority=qos.QOS_PRIORITY, match='inport == "x_a"',
            bandwidth={"rate": 5_000, "burst": 1_250},
            extra_ids={names.DIRECTION_KEY: "egress", qos.SOURCE_KEY: f"annotation {KO_OUT}"}),
    ]
    assert all(r.owner.type == names.OwnerType.POD and r.owner.name == "x/a" for r in rows)


@pytest.mark.parametrize(("result", "directions"), [
    (PodQoS(), []),
    (PodQoS(ingress=Limit(1, 24, "s")), ["to-lport"]),
    (PodQoS(egress=Limit(1, 24, "s")), ["from-lport"]),
    (PodQoS(ingress=Limit(0, 0, "unlimited"), egress=Limit(7, 24, "s")), ["from-lport"]),
])
def test_rows_only_for_limited_directions(result: PodQoS, directions: list[str]) -> None:
    assert [r.direction for r in qos.qos_rows("x/a", "s", "x_a", result)] == directions


def test_match_strings() -> None:
    assert qos.match(EGRESS, "ns_pod") == 'inport == "ns_pod"'
    assert qos.match(INGRESS, "ns_pod") == 'outport == "ns_pod"'
    assert qos.OVN_DIRECTION == {EGRESS: "from-lport", INGRESS: "to-lport"}
    assert 0 <= qos.QOS_PRIORITY <= 32767


def test_rows_stay_in_ovn_bounds() -> None:
    rows = qos.qos_rows("x/a", "s", "x_a", PodQoS(ingress=Limit(10**12, 10**12, "s")))
    assert dict(rows[0].bandwidth) == {"rate": qos.OVN_MAX, "burst": qos.OVN_MAX}
