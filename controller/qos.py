"""Pod bandwidth limits: annotations, QoSPolicy objects and Subnet defaults -> OVN QoS rows. Pure.

Direction (the one convention, used everywhere in kovn, the CRDs included): **ingress is the
traffic the pod receives, egress the traffic the pod sends**, both in Mbit/s. In OVN terms the
pod's egress is a `from-lport` QoS row matching `inport == "<lsp>"` (metered as the packet
enters the switch from the pod, on the pod's node) and its ingress a `to-lport` row matching
`outport == "<lsp>"` (metered as the switch delivers the packet to the pod). Measured with real
traffic in the sandbox: a from-lport/inport row limits only what the pod sends, a
to-lport/outport row only what it receives, for TCP and UDP alike.

Sources of a limit, per direction independently (ingress may come from one source and egress
from another):
1. Pod annotations. Kube-OVN's `ovn.kubernetes.io/ingress_rate` / `egress_rate` (Mbit/s,
   decimals allowed: "0.5"; "0" means explicitly unlimited, as in Kube-OVN, and wins over the
   sources below), or the standard `kubernetes.io/ingress-bandwidth` / `egress-bandwidth`
   (Kubernetes quantities in bit/s as the kubelet hands them to the CNI bandwidth plugin:
   "10M" = 10,000,000, "500k", "1Mi" = 1,048,576; 1k..1P). When both kinds are set for one
   direction the Kube-OVN one wins: it is the more specific (written for this network, where
   the standard one is often stamped on by webhooks from resource limits). Kube-OVN documents
   no burst annotation for pods, so kovn adds `kovn.io/ingress-burst` / `egress-burst`
   (Mbit), applied to the rate annotation in force for that direction.
2. The highest `spec.priority` among the pod's namespace's valid QoSPolicies that select it
   and set that direction; ties: the oldest (metadata.creationTimestamp), then the name.
3. The `spec.qos` default of the pod's Subnet (`ingressRate` / `egressRate`, 0 = none).

A malformed annotation is a Problem (an Event) and is ignored: that direction falls through to
the next source. A QoSPolicy with any problem selects nothing, so it disturbs no pod's limits.

OVN units: bandwidth `rate` in kbit/s, `burst` in kbit; both 1..4294967295. A limit without a
burst gets `default_burst_kbits`: OVS's meter treats a missing burst as one second's worth of
the rate, which let a 3 s TCP run through 1.2 R; too small a burst starves TCP (10% of a
second: 0.54 R at 10 Mbit/s). See DEFAULT_BURST_FRACTION for the measurements.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from controller.peers import OPERATORS, canonical_selector
from controller.subnets import Problem
from controller.topology import pod_owner
from northbound import names
from northbound.rows import QoS

INGRESS, EGRESS = "ingress", "egress"
DIRECTIONS = (INGRESS, EGRESS)
KUBE_OVN_RATE = {INGRESS: "ovn.kubernetes.io/ingress_rate",
                 EGRESS: "ovn.kubernetes.io/egress_rate"}
BANDWIDTH = {INGRESS: "kubernetes.io/ingress-bandwidth", EGRESS: "kubernetes.io/egress-bandwidth"}
BURST = {INGRESS: "kovn.io/ingress-burst", EGRESS: "kovn.io/egress-burst"}
SOURCE_KEY = names.QOS_SOURCE_KEY
"""external_ids of a QoS row: where its limit came from (`kovn show` prints it)."""

QOS_PRIORITY = 2000
"""Priority of kovn's QoS rows. Each pod has at most one row per direction and their matches
name disjoint ports, so kovn's rows never compete with each other; the value only places
them among rows made by hand (higher ones win, OVN applies one meter per packet and stage)
with room on both sides within OVN's 0..32767."""
OVN_DIRECTION = {EGRESS: "from-lport", INGRESS: "to-lport"}
OVN_MAX = 4_294_967_295
MAX_RATE_MBPS = 100_000
"""A QoSPolicy rate or burst above 100 Gbit/s is a typo (AbsurdRate / AbsurdBurst)."""
MIN_QUANTITY, MAX_QUANTITY = 1_000, 10**15
"""The kubelet's bounds for kubernetes.io/*-bandwidth: 1k..1P bit/s."""
DEFAULT_BURST_FRACTION = 0.25
"""Default burst = this fraction of one second's worth of the rate. Measured in the sandbox
(2 pods on 2 nodes, 3 s runs, both directions; TCP received / R by burst in seconds' worth):
10 Mbit/s: 0.1 -> 0.54, 0.2 -> 0.98-0.99, 0.25 -> 1.01-1.03, 0.3 -> 0.99-1.05, 0.5 -> 1.09-1.11;
50 Mbit/s: 0.1 -> 0.69-0.78, 0.2 -> 0.88-0.97, 0.25 -> 0.97-0.99, 0.3 -> 0.93-1.02, 0.5 -> 1.05;
no burst (OVS then takes 1 s): 1.21-1.24. At 0.25, 0.1 to 100 Mbit/s: TCP 0.90-1.03, UDP
0.95-1.04 (the meter counts frames: 1372-byte payloads in 1414-byte frames read 0.97 R).
A full bucket adds at most fraction/3 R to a 3 s run: 0.25 stays under 1.1 R and still gives
TCP's window room (a policer's burst is the queue TCP does not have)."""
MIN_BURST_KBITS = 24
"""Two full-size (1500-byte) frames: an OpenFlow meter drops every packet larger than its
bucket, so below one frame a tiny rate would pass nothing at all."""

_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[kMGTPE]|m|[eE][+-]?\d+)?$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"m": Decimal("0.001"), **{s: Decimal(10) ** (3 * (i + 1)) for i, s in
                                      enumerate("kMGTPE")}}


@dataclass(frozen=True)
class Limit:
    """A direction's limit in OVN units and who set it. rate_kbps 0: explicitly unlimited
    (Kube-OVN's "0"), which wins like any limit but writes no row."""

    rate_kbps: int
    burst_kbits: int
    source: str

    @property
    def unlimited(self) -> bool:
        return self.rate_kbps == 0


@dataclass(frozen=True)
class Bandwidth:
    """One direction of a QoSPolicy or Subnet default: Mbit/s and Mbit (None: default)."""

    rate_mbps: float
    burst_mbit: float | None = None

    def limit(self, source: str) -> Limit:
        rate = _kbps(Decimal(str(self.rate_mbps)) * 1000)
        burst = (default_burst_kbits(rate) if not self.burst_mbit
                 else _clamp(round(Decimal(str(self.burst_mbit)) * 1000)))
        return Limit(rate, burst, source)


@dataclass(frozen=True)
class QoSPolicySpec:
    """A valid QoSPolicy: `selector` is canonical (controller.peers.canonical_selector)."""

    namespace: str
    name: str
    selector: str
    ingress: Bandwidth | None = None
    egress: Bandwidth | None = None
    priority: int = 0
    created: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def source(self) -> str:
        return f"QoSPolicy {self.key} (priority {self.priority})"


@dataclass(frozen=True)
class PodQoS:
    """The limits in force on one pod (None: unlimited) and what was wrong on the way."""

    ingress: Limit | None = None
    egress: Limit | None = None
    problems: tuple[Problem, ...] = ()
    policies: frozenset[str] = frozenset()
    """`ns/name` of the QoSPolicies in force here (a policy's status.pods counts these)."""

    def get(self, direction: str) -> Limit | None:
        return self.ingress if direction == INGRESS else self.egress


def default_burst_kbits(rate_kbps: int) -> int:
    """The burst a limit gets when none is given (see DEFAULT_BURST_FRACTION)."""
    return _clamp(max(round(rate_kbps * DEFAULT_BURST_FRACTION), MIN_BURST_KBITS))


def _clamp(value: int) -> int:
    return max(1, min(int(value), OVN_MAX))


def _kbps(value: Decimal) -> int:
    """kbit/s for OVN: at least 1 (a positive rate never becomes "no limit")."""
    return _clamp(round(value))


def parse_quantity(text: str) -> int:
    """A Kubernetes resource quantity as an integer (rounded up, like Quantity.Value());
    ValueError when it is not one."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 10M, 500k, 1Gi)")
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    if suffix in _BINARY:
        value = number * _BINARY[suffix]
    elif suffix in _DECIMAL:
        value = number * _DECIMAL[suffix]
    elif suffix:
        value = number.scaleb(int(suffix[1:]))
    else:
        value = number
    return int(value.to_integral_value(rounding="ROUND_CEILING"))


def _mbit(text: str) -> Decimal:
    """A Kube-OVN style number of Mbit/s ("3", "0.5"); ValueError unless finite and >= 0."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number of Mbit/s") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{text!r} is not a number >= 0 of Mbit/s")
    return value


def _annotation_limit(annotations: Mapping[str, str], direction: str,
                      problems: list[Problem]) -> Limit | None:
    rate: int | None = None
    source = ""
    ovn_key, std_key, burst_key = KUBE_OVN_RATE[direction], BANDWIDTH[direction], BURST[direction]
    if ovn_key in annotations:
        try:
            mbps = _mbit(annotations[ovn_key])
            rate, source = (_kbps(mbps * 1000) if mbps else 0), f"annotation {ovn_key}"
        except ValueError as exc:
            problems.append(Problem("InvalidQoSAnnotation", f"{ovn_key}: {exc}; ignored"))
    if rate is None and std_key in annotations:
        try:
            bits = parse_quantity(annotations[std_key])
            if not MIN_QUANTITY <= bits <= MAX_QUANTITY:
                raise ValueError(f"{annotations[std_key]!r} is outside 1k..1P bit/s")
            rate, source = _kbps(Decimal(bits) / 1000), f"annotation {std_key}"
        except ValueError as exc:
            problems.append(Problem("InvalidQoSAnnotation", f"{std_key}: {exc}; ignored"))
    burst: int | None = None
    if burst_key in annotations:
        if rate is None:
            problems.append(Problem("BurstWithoutRate", f"{burst_key} needs {ovn_key} or "
                                    f"{std_key} on the pod; ignored"))
        else:
            try:
                value = _mbit(annotations[burst_key])
                burst = _clamp(round(value * 1000)) if value else None
                source += f" (burst {burst_key})" if value else ""
            except ValueError as exc:
                problems.append(Problem("InvalidQoSAnnotation", f"{burst_key}: {exc}; ignored"))
    if rate is None:
        return None
    if rate == 0:
        return Limit(0, 0, f"{source}=0 (unlimited)")
    return Limit(rate, burst or default_burst_kbits(rate), source)


def annotation_limits(annotations: Mapping[str, str]) -> tuple[dict[str, Limit], list[Problem]]:
    """What the pod's own annotations ask for, per direction that has one, and the problems
    of the annotations that were ignored."""
    problems: list[Problem] = []
    limits = {d: lim for d in DIRECTIONS
              if (lim := _annotation_limit(annotations, d, problems)) is not None}
    return limits, problems


# --- QoSPolicy ------------------------------------------------------------------------------
def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bandwidth(where: str, block: Any, problems: list[Problem]) -> Bandwidth | None:
    if block is None:
        return None
    if not isinstance(block, Mapping):
        problems.append(Problem("InvalidRate", f"{where} must be an object {{rate, burst}}"))
        return None
    rate, burst = block.get("rate"), block.get("burst")
    before = len(problems)
    if not _number(rate):
        problems.append(Problem("InvalidRate", f"{where}.rate must be a number of Mbit/s"))
    elif rate < 0:
        problems.append(Problem("NegativeRate", f"{where}.rate {rate} is negative: a limit is "
                                "a rate > 0 Mbit/s"))
    elif rate == 0:
        problems.append(Problem("InvalidRate", f"{where}.rate is 0: remove {where} for no "
                                "limit, or give a rate > 0 Mbit/s"))
    elif rate > MAX_RATE_MBPS:
        problems.append(Problem("AbsurdRate", f"{where}.rate {rate} Mbit/s is above "
                                f"{MAX_RATE_MBPS} Mbit/s (100 Gbit/s): a unit mistake?"))
    if burst is not None:
        if not _number(burst):
            problems.append(Problem("InvalidBurst", f"{where}.burst must be a number of Mbit"))
        elif burst < 0:
            problems.append(Problem("NegativeBurst", f"{where}.burst {burst} is negative"))
        elif burst > MAX_RATE_MBPS:
            problems.append(Problem("AbsurdBurst", f"{where}.burst {burst} Mbit is above "
                                    f"{MAX_RATE_MBPS} Mbit"))
    if len(problems) > before:
        return None
    return Bandwidth(float(rate), float(burst) if burst else None)


def _selector_problems(selector: Any) -> list[Problem]:
    """What makes a LabelSelector unusable; the API server checks only its shape."""
    if not isinstance(selector, Mapping):
        return [Problem("BadSelector", "spec.podSelector must be a label selector ({} selects "
                        "every pod of the namespace)")]
    problems = []
    labels = selector.get("matchLabels") or {}
    if not isinstance(labels, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        problems.append(Problem("BadSelector", "matchLabels must map label keys to strings"))
    exprs = selector.get("matchExpressions") or []
    if not isinstance(exprs, list):
        return [*problems, Problem("BadSelector", "matchExpressions must be a list")]
    for i, expr in enumerate(exprs):
        where = f"matchExpressions[{i}]"
        if not isinstance(expr, Mapping) or not expr.get("key"):
            problems.append(Problem("BadSelector", f"{where} needs a key"))
            continue
        op, values = expr.get("operator"), expr.get("values") or []
        if op not in OPERATORS:
            problems.append(Problem("BadSelector", f"{where}: operator {op!r} is not one of "
                                    f"{', '.join(OPERATORS)}"))
        elif op in ("In", "NotIn") and not values:
            problems.append(Problem("BadSelector", f"{where}: {op} needs values"))
        elif op in ("Exists", "DoesNotExist") and values:
            problems.append(Problem("BadSelector", f"{where}: {op} takes no values"))
    return problems


def parse_policy(obj: Mapping[str, Any]) -> tuple[QoSPolicySpec | None, list[Problem]]:
    """A QoSPolicy object as (spec, []) when valid, (None, problems) when not: an invalid
    policy selects no pod, so it changes nobody's limits until fixed."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    problems: list[Problem] = []
    if "podSelector" not in spec:
        problems.append(Problem("BadSelector", "spec.podSelector is required ({} selects every "
                                "pod of the namespace)"))
        selector = None
    else:
        problems += _selector_problems(spec["podSelector"])
        selector = None if problems else canonical_selector(spec["podSelector"])
    ingress = _bandwidth("spec.ingress", spec.get("ingress"), problems)
    egress = _bandwidth("spec.egress", spec.get("egress"), problems)
    if spec.get("ingress") is None and spec.get("egress") is None:
        problems.append(Problem("NoLimit", "neither spec.ingress nor spec.egress is set: the "
                                "policy would limit nothing"))
    priority = spec.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
        problems.append(Problem("InvalidPriority", f"spec.priority {priority!r} must be an "
                                "integer >= 0"))
    if problems:
        return None, problems
    return QoSPolicySpec(namespace=meta.get("namespace", ""), name=meta.get("name", ""),
                         selector=selector or "{}", ingress=ingress, egress=egress,
                         priority=priority, created=meta.get("creationTimestamp", "")), []


def _policy_order(policy: QoSPolicySpec) -> tuple[int, str, str]:
    """Sort key: highest priority first, then the oldest ("" = unknown sorts last), name."""
    return (-policy.priority, policy.created or "~", policy.name)


# --- Subnet defaults ---------------------------------------------------------------------------
def subnet_defaults(subnet: Mapping[str, Any]) -> tuple[dict[str, Bandwidth], list[Problem]]:
    """A Subnet's `spec.qos`: ingressRate / egressRate (Mbit/s, 0 or absent: no default) and
    ingressBurst / egressBurst (Mbit, absent or 0: the default burst)."""
    qos = (subnet.get("spec") or {}).get("qos") or {}
    out: dict[str, Bandwidth] = {}
    problems: list[Problem] = []
    for d in DIRECTIONS:
        rate = qos.get(f"{d}Rate")
        if rate in (None, 0):
            continue
        bw = _bandwidth(f"spec.qos.{d}", {"rate": rate, "burst": qos.get(f"{d}Burst")},
                        problems)
        if bw is not None:
            out[d] = bw
    return out, problems


def subnet_source(subnet: str) -> str:
    return f"Subnet {subnet} default"


# --- precedence and rows -----------------------------------------------------------------------
def resolve(annotations: Mapping[str, str], policies: Iterable[QoSPolicySpec],
            subnet: str = "", subnet_default: Mapping[str, Bandwidth] | None = None) -> PodQoS:
    """The limits of one pod: annotation > the first of `policies` (valid ones that select
    the pod) by priority, age, name > its Subnet's default; per direction independently."""
    own, problems = annotation_limits(annotations)
    ordered = sorted(policies, key=_policy_order)
    chosen: dict[str, Limit | None] = {}
    winners: set[str] = set()
    for d in DIRECTIONS:
        limit = own.get(d)
        if limit is None:
            winner = next((p for p in ordered if getattr(p, d) is not None), None)
            if winner is not None:
                limit = getattr(winner, d).limit(winner.source())
                winners.add(winner.key)
        if limit is None and subnet_default and d in subnet_default:
            limit = subnet_default[d].limit(subnet_source(subnet))
        chosen[d] = limit
    return PodQoS(chosen[INGRESS], chosen[EGRESS], tuple(problems), frozenset(winners))


def match(direction: str, port: str) -> str:
    """The pod's egress is what enters the switch from its port, its ingress what leaves
    the switch to it (`outport` exists only in to-lport)."""
    return f'inport == "{port}"' if direction == EGRESS else f'outport == "{port}"'


def qos_rows(pod_key: str, switch: str, port: str, qos: PodQoS) -> list[QoS]:
    """One QoS row per limited direction on the pod's switch, owned by the Pod, saying in
    external_ids which direction (Kubernetes' term) and which source it enforces."""
    rows = []
    for d in DIRECTIONS:
        limit = qos.get(d)
        if limit is None or limit.unlimited:
            continue
        rows.append(QoS(owner=pod_owner(pod_key), switch=switch, direction=OVN_DIRECTION[d],
                        priority=QOS_PRIORITY, match=match(d, port),
                        bandwidth={"rate": _clamp(limit.rate_kbps),
                                   "burst": _clamp(limit.burst_kbits)},
                        extra_ids={names.DIRECTION_KEY: d, SOURCE_KEY: limit.source}))
    return rows
