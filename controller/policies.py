"""NetworkPolicy -> a Port_Group of the pods it selects and allow-related ACLs on it.

Pure: the operator hands in the policy, the pods it selects (their ports and named container
ports) and a way to resolve an egress named port on destination pods; out come the rows, the
peer sets the ACLs refer to (controller/peers.py: shared address sets) and which directions
the policy isolates (the namespace's default deny, controller/isolation.py, holds those pods).

Semantics follow networking.k8s.io/v1 exactly:
- policyTypes: given, or Ingress plus Egress when the policy has egress rules.
- A rule allows (from any of its peers) x (any of its ports); no peers: any peer; no ports:
  any port. A peer is podSelector (this namespace), namespaceSelector (all their pods),
  both (AND), or ipBlock (cidr except ...: one ACL per ipBlock).
- Ports: protocol (TCP default, UDP, SCTP), a number with optional endPort (a range), or a
  name, resolved on each destination pod from its containerPorts for that protocol only:
  ingress on the selected pods (a Port_Group per number the name resolves to), egress on
  the peer's pods (a peer set per number). A name resolves to nothing on an ipBlock.
- Ingress ACLs are to-lport on `outport == @pg`; egress ACLs from-lport on `inport == @pg`
  with apply-after-lb, so egress to a ClusterIP is judged against the chosen backend.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller import aclorder
from controller.peers import ALL_PODS, PeerSpec, canonical_selector, peer_of
from northbound import names
from northbound.rows import ACL, NbRow, Owner, PortGroup

PROTOCOLS = ("TCP", "UDP", "SCTP")
INGRESS, EGRESS = "ingress", "egress"
AFTER_LB = {"apply-after-lb": "true"}


@dataclass(frozen=True)
class SelectedPod:
    """A pod a policy selects: its Logical_Switch_Port and its named container ports
    ((PROTOCOL, name) -> number)."""

    port: str
    named_ports: Mapping[tuple[str, str], int] = field(default_factory=dict)


@dataclass(frozen=True)
class Logging:
    """ACL logging of a namespace (annotation kovn.io/acl-logging): a severity or None."""

    deny: str | None = None
    allow: str | None = None


@dataclass
class PolicyRows:
    rows: list[NbRow]
    peers: set[PeerSpec]
    ingress: bool
    egress: bool


EgressResolver = Callable[[PeerSpec, str, str], set[int]]
"""(peer, PROTOCOL, port name) -> the numbers that name has on the peer's pods."""


def policy_owner(key: str) -> Owner:
    return Owner(names.OwnerType.NETWORK_POLICY, key)


def policy_types(spec: Mapping[str, Any]) -> tuple[bool, bool]:
    """(isolates ingress, isolates egress)."""
    types = spec.get("policyTypes")
    if types:
        unknown = set(types) - {"Ingress", "Egress"}
        if unknown:
            raise ValueError(f"policyTypes {sorted(unknown)} are not Ingress or Egress")
        return "Ingress" in types, "Egress" in types
    return True, bool(spec.get("egress"))


@dataclass(frozen=True)
class _Ports:
    """A rule's ports, split: numeric L4 terms (None: any port) and names by protocol."""

    numeric: tuple[str, ...] | None
    named: tuple[tuple[str, str], ...]


def _rule_ports(ports: Sequence[Mapping[str, Any]] | None) -> _Ports:
    if not ports:
        return _Ports(None, ())
    numeric: list[str] = []
    named: list[tuple[str, str]] = []
    for entry in ports:
        proto = (entry.get("protocol") or "TCP").upper()
        if proto not in PROTOCOLS:
            raise ValueError(f"port protocol {proto!r} is not TCP, UDP or SCTP")
        l4 = proto.lower()
        port, end = entry.get("port"), entry.get("endPort")
        if port is None:
            numeric.append(l4)
        elif isinstance(port, str) and not port.isdigit():
            named.append((proto, port))
        else:
            first = int(port)
            if not 1 <= first <= 65535:
                raise ValueError(f"port {first} is outside 1..65535")
            if end is None or int(end) == first:
                numeric.append(f"{l4}.dst == {first}")
            elif int(end) < first or int(end) > 65535:
                raise ValueError(f"endPort {end} is below port {first} or above 65535")
            else:
                numeric.append(f"{l4}.dst >= {first} && {l4}.dst <= {int(end)}")
    return _Ports(tuple(dict.fromkeys(numeric)) if numeric else (), tuple(dict.fromkeys(named)))


def _l4(terms: Sequence[str]) -> str:
    return terms[0] if len(terms) == 1 else "(" + " || ".join(f"({t})" for t in terms) + ")"


def _ip_block(block: Mapping[str, Any], side: str) -> str:
    """`ip4.src == 10.0.0.0/8 && ip4.src != {10.1.0.0/16}` for one ipBlock."""
    try:
        cidr = ipaddress.ip_network(block["cidr"], strict=False)
        excepts = [ipaddress.ip_network(e, strict=False) for e in block.get("except") or ()]
    except (KeyError, ValueError) as exc:
        raise ValueError(f"ipBlock {dict(block)!r} is not a CIDR with CIDR excepts: {exc}") \
            from exc
    field_ = f"ip{cidr.version}.{side}"
    for e in excepts:
        if e.version != cidr.version or not e.subnet_of(cidr):  # type: ignore[arg-type]
            raise ValueError(f"ipBlock except {e} is not inside {cidr}")
    match = f"{field_} == {cidr}"
    if excepts:
        match += f" && {field_} != {{{', '.join(str(e) for e in excepts)}}}"
    return match


def _sets(peers: Sequence[PeerSpec], side: str) -> str:
    names_ = sorted({f"${p.address_set}" for p in peers})
    return f"ip4.{side} == {names_[0]}" if len(names_) == 1 else \
        f"ip4.{side} == {{{', '.join(names_)}}}"


class _Builder:
    def __init__(self, policy: Mapping[str, Any], selected: Sequence[SelectedPod],
                 resolve: EgressResolver, logging: Logging) -> None:
        meta = policy["metadata"]
        self.namespace, self.name = meta["namespace"], meta["name"]
        self.owner = policy_owner(f"{self.namespace}/{self.name}")
        self.pg = names.policy_port_group(self.namespace, self.name)
        self.selected, self.resolve, self.logging = selected, resolve, logging
        self.rows: list[NbRow] = []
        self.peers: set[PeerSpec] = set()
        self.named_groups: dict[tuple[str, str, int], PortGroup] = {}

    def acl(self, direction: str, rule: int, match: str) -> None:
        ids = {names.ACL_ROLE_KEY: str(names.AclRole.POLICY),
               names.POLICY_KEY: f"{self.namespace}/{self.name}",
               names.DIRECTION_KEY: direction, names.RULE_KEY: str(rule)}
        severity = self.logging.allow
        self.rows.append(ACL(
            owner=self.owner, port_group=self.pg, extra_ids=ids,
            direction="to-lport" if direction == INGRESS else "from-lport",
            priority=aclorder.POLICY_ALLOW, match=match, action="allow-related",
            name=names.policy_acl_name(self.namespace, self.name, direction, rule),
            log=severity is not None, severity=severity,
            meter=names.ACL_LOG_METER if severity is not None else None,
            options=AFTER_LB if direction == EGRESS else {}))

    def named_group(self, proto: str, port: str, number: int) -> str:
        key = (proto, port, number)
        if key not in self.named_groups:
            self.named_groups[key] = PortGroup(
                owner=self.owner, name=names.named_port_group(self.namespace, self.name,
                                                              proto, port, number),
                ports=frozenset(p.port for p in self.selected
                                if p.named_ports.get((proto, port)) == number))
        return self.named_groups[key].name

    def peers_of(self, rule: Mapping[str, Any], side_key: str
                 ) -> tuple[list[PeerSpec], list[Mapping[str, Any]], bool]:
        """(pod peers, ipBlocks, any peer)."""
        entries = rule.get(side_key) or []
        pods, blocks = [], []
        for entry in entries:
            peer = peer_of(self.namespace, entry)
            if peer is None:
                blocks.append(entry["ipBlock"])
            else:
                pods.append(peer)
        return pods, blocks, not entries

    def ingress(self, index: int, rule: Mapping[str, Any]) -> None:
        pods, blocks, anyone = self.peers_of(rule, "from")
        self.peers.update(pods)
        sources = ([""] if anyone else []) + ([_sets(pods, "src")] if pods else []) + \
            [_ip_block(b, "src") for b in blocks]
        ports = _rule_ports(rule.get("ports"))
        for source in sources:
            base = f"outport == @{self.pg} && ip4" if not source.startswith("ip6") else \
                f"outport == @{self.pg} && ip6"
            base += f" && {source}" if source else ""
            if ports.numeric is None:
                self.acl(INGRESS, index, base)
            elif ports.numeric:
                self.acl(INGRESS, index, f"{base} && {_l4(ports.numeric)}")
            for proto, port in ports.named:
                numbers = sorted({n for p in self.selected
                                  if (n := p.named_ports.get((proto, port))) is not None})
                for number in numbers:
                    group = self.named_group(proto, port, number)
                    match = base.replace(f"@{self.pg}", f"@{group}", 1)
                    self.acl(INGRESS, index, f"{match} && {proto.lower()}.dst == {number}")

    def egress(self, index: int, rule: Mapping[str, Any]) -> None:
        pods, blocks, anyone = self.peers_of(rule, "to")
        self.peers.update(pods)
        dests = ([""] if anyone else []) + ([_sets(pods, "dst")] if pods else []) + \
            [_ip_block(b, "dst") for b in blocks]
        ports = _rule_ports(rule.get("ports"))
        for dest in dests:
            family = "ip6" if dest.startswith("ip6") else "ip4"
            base = f"inport == @{self.pg} && {family}" + (f" && {dest}" if dest else "")
            if ports.numeric is None:
                self.acl(EGRESS, index, base)
            elif ports.numeric:
                self.acl(EGRESS, index, f"{base} && {_l4(ports.numeric)}")
        for proto, port in ports.named:  # resolved on the destination pods
            targets = [ALL_PODS] if anyone else pods
            by_number: dict[int, list[PeerSpec]] = {}
            for peer in targets:
                for number in sorted(self.resolve(peer, proto, port)):
                    named = PeerSpec(peer.namespace, peer.namespace_selector, peer.pod_selector,
                                     (proto, port, number))
                    by_number.setdefault(number, []).append(named)
            for number, named_peers in sorted(by_number.items()):
                self.peers.update(named_peers)
                self.acl(EGRESS, index, f"inport == @{self.pg} && ip4 && "
                         f"{_sets(named_peers, 'dst')} && {proto.lower()}.dst == {number}")


def policy_rows(policy: Mapping[str, Any], selected: Sequence[SelectedPod],
                resolve: EgressResolver, logging: Logging = Logging()) -> PolicyRows:
    """The rows of one NetworkPolicy (raises ValueError on what the API server let through
    but kovn cannot honour exactly: the policy is then set aside with an Event)."""
    spec = policy.get("spec") or {}
    canonical_selector(spec.get("podSelector") or {})  # validates its operators
    ingress, egress = policy_types(spec)
    build = _Builder(policy, selected, resolve, logging)
    if ingress:
        for index, rule in enumerate(spec.get("ingress") or ()):
            build.ingress(index, rule or {})
    if egress:
        for index, rule in enumerate(spec.get("egress") or ()):
            build.egress(index, rule or {})
    group = PortGroup(owner=build.owner, name=build.pg,
                      ports=frozenset(p.port for p in selected))
    acls = {row.key: row for row in reversed(build.rows)}  # identical rules: one ACL
    rows: list[NbRow] = [group, *build.named_groups.values(),
                         *sorted(acls.values(), key=lambda r: r.key)]
    return PolicyRows(rows, build.peers, ingress, egress)
