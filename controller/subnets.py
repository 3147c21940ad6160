"""Subnet objects: parsing, semantic validation, and which subnet a pod gets. Pure.

The API server validates each Subnet's shape (OpenAPI schema in the CRD); what needs the
other Subnets or the cluster's configuration is validated here and reported by the operator
as a `Validated=False` condition with a reason, plus an Event. An invalid Subnet gets no
switch and no addresses; it disturbs nothing else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from contract.podnetwork import LOGICAL_SWITCH
from controller.ipam import parse_excludes
from northbound import names


def reserved_names() -> frozenset[str]:
    """Names a Subnet may not take: a Subnet's switch carries its name, and its router link
    is `ovn-cluster-<name>` / `<name>-ovn-cluster`, so a Subnet named after kovn's own
    switches or router would claim (or collide with) the cluster's rows. Kubernetes names
    cannot hold '_' or capitals, so the per-node names (`GR_<node>`, `ext_<node>`) are safe."""
    return frozenset({names.JOIN_SWITCH, names.CLUSTER_ROUTER})


@dataclass(frozen=True)
class SubnetSpec:
    name: str
    cidr: str
    gateway: str
    exclude_ips: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    private: bool = False
    allow_subnets: tuple[str, ...] = ()
    nat_outgoing: bool = False
    gateway_type: str = "distributed"
    default: bool = False
    created: str = ""  # creationTimestamp: the older claim wins a conflict
    deleting: bool = False

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr, strict=False)

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen


@dataclass(frozen=True)
class Problem:
    """Why a Subnet is not valid: a CamelCase reason and a message saying what to fix."""

    reason: str
    message: str


class SpecError(ValueError):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def parse_subnet(obj: Mapping[str, Any]) -> SubnetSpec:
    """A Subnet custom resource (dict) as a SubnetSpec; SpecError when unusable on its own."""
    meta, spec = obj.get("metadata", {}), obj.get("spec", {}) or {}
    name = meta.get("name", "")
    try:
        network = ipaddress.IPv4Network(spec.get("cidrBlock", ""), strict=False)
    except ValueError as exc:
        raise SpecError(Problem("InvalidCIDR", f"cidrBlock: {exc}")) from exc
    if str(network) != spec.get("cidrBlock"):
        raise SpecError(Problem("InvalidCIDR", f"cidrBlock {spec.get('cidrBlock')} has host "
                                f"bits set: did you mean {network}?"))
    if network.num_addresses < 4:
        raise SpecError(Problem("InvalidCIDR", f"cidrBlock {network} is too small for a "
                                "gateway and pods: use /30 or larger"))
    gateway = spec.get("gateway") or str(network[1])
    return SubnetSpec(
        name=name, cidr=str(network), gateway=gateway,
        exclude_ips=tuple(spec.get("excludeIps") or ()),
        namespaces=tuple(spec.get("namespaces") or ()),
        private=bool(spec.get("private", False)),
        allow_subnets=tuple(spec.get("allowSubnets") or ()),
        nat_outgoing=bool(spec.get("natOutgoing", False)),
        gateway_type=spec.get("gatewayType", "distributed"),
        default=bool(spec.get("default", False)),
        created=meta.get("creationTimestamp", ""),
        deleting=bool(meta.get("deletionTimestamp")),
    )


def _own_problems(spec: SubnetSpec) -> list[Problem]:
    problems = []
    if spec.name in reserved_names():
        problems.append(Problem("ReservedName", f"the name {spec.name!r} is kovn's own "
                                f"{'switch' if spec.name == names.JOIN_SWITCH else 'router'}:"
                                " pick another name for this Subnet"))
    network = spec.network
    try:
        gateway = ipaddress.IPv4Address(spec.gateway)
    except ValueError:
        return [Problem("InvalidGateway", f"gateway {spec.gateway!r} is not an IPv4 address")]
    if gateway not in network or gateway in (network.network_address, network.broadcast_address):
        problems.append(Problem("GatewayOutsideCIDR", f"gateway {gateway} is not a usable "
                                f"address of {network}: use e.g. {network[1]}"))
    try:
        excluded = parse_excludes(spec.exclude_ips)
    except ValueError as exc:
        return [*problems, Problem("InvalidExcludeIps", str(exc))]
    for lo, hi in excluded:
        if lo < int(network.network_address) or hi > int(network.broadcast_address):
            first, last = ipaddress.IPv4Address(lo), ipaddress.IPv4Address(hi)
            shown = str(first) if lo == hi else f"{first}..{last}"
            problems.append(Problem("ExcludeIpsOutsideCIDR",
                                    f"excludeIps {shown} is outside {network}"))
    for allowed in spec.allow_subnets:
        try:
            ipaddress.IPv4Network(allowed, strict=False)
        except ValueError:
            problems.append(Problem("InvalidAllowSubnets", f"allowSubnets {allowed!r} is not a "
                                    "CIDR"))
    return problems


def _claim_order(spec: SubnetSpec) -> tuple[str, str]:
    return (spec.created or "~", spec.name)


def validate(
    specs: Iterable[SubnetSpec], reserved: Mapping[str, str]
) -> dict[str, list[Problem]]:
    """Problems of every subnet, given all of them and the cluster's reserved ranges
    (what -> CIDR: "join range", "service range", "address of node n1"...). On an overlap or
    a namespace claimed twice, the older Subnet keeps it and the newer one is invalid, so
    creating a bad Subnet never breaks a working one."""
    ordered = sorted(specs, key=_claim_order)
    problems: dict[str, list[Problem]] = {s.name: _own_problems(s) for s in ordered}
    accepted: list[SubnetSpec] = []
    claimed: dict[str, str] = {}
    for spec in ordered:
        mine = problems[spec.name]
        for what, cidr in reserved.items():
            if spec.network.overlaps(ipaddress.IPv4Network(cidr)):
                mine.append(Problem("OverlapsReservedRange",
                                    f"{spec.cidr} overlaps the {what} {cidr}: pick a range "
                                    "that overlaps no cluster range"))
        for other in accepted:
            if spec.network.overlaps(other.network):
                mine.append(Problem("OverlappingCIDR", f"{spec.cidr} overlaps subnet "
                                    f"{other.name} ({other.cidr}); pick a disjoint range"))
        for ns in spec.namespaces:
            if ns in claimed:
                mine.append(Problem("NamespaceConflict", f"namespace {ns} already belongs to "
                                    f"subnet {claimed[ns]}; remove it from one of them"))
        if not mine:
            accepted.append(spec)
            for ns in spec.namespaces:
                claimed[ns] = spec.name
    return problems


@dataclass(frozen=True)
class Binding:
    """Which subnet the pods of each namespace use (computed from valid subnets)."""

    default: str
    by_namespace: dict[str, str] = field(default_factory=dict)
    namespace_annotations: dict[str, str] = field(default_factory=dict)

    def subnet_for(self, namespace: str, pod_annotations: Mapping[str, str]) -> str:
        """Pod annotation > namespace annotation > Subnet.spec.namespaces > the default."""
        return (pod_annotations.get(LOGICAL_SWITCH)
                or self.namespace_annotations.get(namespace)
                or self.by_namespace.get(namespace)
                or self.default)


def binding(valid: Iterable[SubnetSpec], default: str,
            namespace_annotations: Mapping[str, str]) -> Binding:
    by_namespace: dict[str, str] = {}
    for spec in valid:
        for ns in spec.namespaces:
            by_namespace.setdefault(ns, spec.name)
    return Binding(default, by_namespace, dict(namespace_annotations))
