"""`kovn trace`, the pure part: the packet to trace, ovn-trace's output read back, the verdict.

The microflow comes from NB row data (the pod's Logical_Switch_Port, the destination's port
or the switch's router port MAC, a Service's VIP and backend). ovn-trace's detailed output
names each logical flow it ran with its stage, match, priority and SB uuid prefix; an ACL's
flows carry `external_ids:stage-hint`, the NB ACL's uuid prefix (northd's own link), and the
ACL's kovn external_ids (northbound/names.py) name the policy that decided.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from northbound import names
from northbound.trace_output import Step

PROTOCOLS = ("tcp", "udp", "icmp")
SOURCE_PORT = 40000
"""The traced connection's fixed source port (TCP/UDP)."""
CT_NEW_STATES = 8
"""`--ct=new` this many times: every conntrack lookup on the way sees a new connection
(without it ovn-trace assumes `trk,est`, and ACLs never judge established traffic)."""
ACL_STAGES = frozenset({"ls_in_acl", "ls_in_acl_after_lb", "ls_out_acl",
                        # OVN >= 23.06 names (ACL tiers), so a newer OVN still maps.
                        "ls_in_acl_eval", "ls_in_acl_after_lb_eval", "ls_out_acl_eval"})
INTERNAL_PORT_TYPES = frozenset({"patch", "l3gateway", "chassisredirect"})
"""Output to these ports hands the packet to the next logical datapath; not a delivery."""
_ALLOW = frozenset({"allow", "allow-related", "allow-stateless"})
_ALWAYS_WHAT = {"arp-nd": "ARP/ND", "nodes": "the nodes", "hairpin": "hairpin traffic"}


class TraceError(ValueError):
    """The request cannot be traced; the message says what to do next."""


# --- what NB knows ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SwitchPort:
    """A Logical_Switch_Port with its first "MAC IP..." address."""

    name: str
    switch: str
    mac: str
    ips: tuple[str, ...]
    owner_type: str = ""
    owner: str = ""

    @property
    def ipv4(self) -> str | None:
        return next((ip for ip in self.ips if ipaddress.ip_address(ip).version == 4), None)

    @property
    def label(self) -> str:
        """`ns/pod` for a pod, `node N` for a node's management port, else the port name."""
        if self.owner_type == names.OwnerType.POD and self.owner:
            return self.owner
        if self.owner_type == names.OwnerType.NODE and self.owner:
            return f"node {self.owner}"
        return self.name


@dataclass(frozen=True)
class Acl:
    uuid: str
    direction: str
    priority: int
    match: str
    action: str
    name: str | None = None
    external_ids: Mapping[str, str] = field(default_factory=dict)
    holder: str = ""
    """Where the ACL is: `port group X` or `switch Y`."""


@dataclass(frozen=True)
class Northbound:
    """The NB rows a trace needs, read once."""

    ports: Mapping[str, SwitchPort]
    router_macs: Mapping[str, str]
    load_balancers: Mapping[str, Mapping[str, str]]
    acls: Mapping[str, Acl]

    def port_with_ip(self, ip: str) -> SwitchPort | None:
        return next((p for p in self.ports.values() if ip in p.ips), None)


# --- the packet -------------------------------------------------------------------------------

def parse_pod(text: str) -> tuple[str, str]:
    ns, sep, pod = text.partition("/")
    if not sep or not ns or not pod or "/" in pod:
        raise TraceError(f"{text!r} is not NAMESPACE/POD")
    return ns, pod


@dataclass(frozen=True)
class Target:
    """Where the traced packet goes."""

    text: str  # how the destination is printed
    ip: str
    mac: str  # eth.dst
    port: int | None
    expected: SwitchPort | None  # the port it should reach (a Service: the chosen backend's)
    load_balancer: str | None = None
    backend: str | None = None
    other_backends: tuple[str, ...] = ()


def source_port(nb: Northbound, namespace: str, pod: str) -> SwitchPort:
    name = names.pod_port(namespace, pod)
    port = nb.ports.get(name)
    if port is None:
        raise TraceError(f"no port {name} in NB: is the pod running and kovn controller up? "
                         f"(`kubectl -n {namespace} get pod {pod} -o wide`, `kovn show pod "
                         f"{namespace}/{pod}`)")
    if port.ipv4 is None:
        raise TraceError(f"port {name} has no IPv4 address in NB (addresses: {port.ips or '-'})")
    return port


def _gateway_mac(nb: Northbound, switch: str) -> str:
    lrp = names.router_port(names.CLUSTER_ROUTER, switch)
    mac = nb.router_macs.get(lrp)
    if mac is None:
        raise TraceError(f"switch {switch} has no router port {lrp} in NB, so nothing leaves "
                         "it: is its Subnet valid (`kubectl get subnet`)?")
    return mac


def _split_hostport(text: str) -> tuple[str, int]:
    """("10.96.0.1", 443) of "10.96.0.1:443"; port 0 when there is none."""
    host, _, port = text.rpartition(":")
    if not host or "]" in port or not port.isdigit():
        return text.strip("[]"), 0
    return host.strip("[]"), int(port)


def _ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def service_target(nb: Northbound, src: SwitchPort, service: str, protocol: str,
                   port: int | None, backend: str | None) -> Target:
    if protocol == "icmp":
        raise TraceError("Services balance tcp or udp: give `tcp PORT` or `udp PORT`")
    ns, name = parse_pod(service)
    lb = names.load_balancer(ns, name, protocol)
    vips = nb.load_balancers.get(lb)
    if vips is None:
        raise TraceError(f"no load balancer {lb} in NB: does Service {service} exist with a "
                         f"{protocol.upper()} port (`kubectl -n {ns} get svc {name}`)?")
    ours = {vip: b for vip, b in vips.items() if _ipv4(_split_hostport(vip)[0])}
    ports = sorted({_split_hostport(vip)[1] for vip in ours})
    if port is None:
        if len(ports) != 1:
            raise TraceError(f"Service {service} has {protocol} ports "
                             f"{', '.join(map(str, ports)) or 'none'}: give one")
        port = ports[0]
    chosen = sorted(vip for vip in ours if _split_hostport(vip)[1] == port)
    if not chosen:
        raise TraceError(f"Service {service} has no {protocol} port {port} (its {protocol} "
                         f"ports: {', '.join(map(str, ports)) or 'none'})")
    vip = chosen[0]
    backends = tuple(b.strip() for b in ours[vip].split(",") if b.strip())
    if backend is not None and backend not in backends:
        raise TraceError(f"{backend} is not a backend of {lb} {vip} (backends: "
                         f"{', '.join(backends) or 'none'})")
    pick = backend or (backends[0] if backends else None)
    ip = _split_hostport(vip)[0]
    expected = nb.port_with_ip(_split_hostport(pick)[0]) if pick else None
    return Target(text=f"Service {service} ({ip})", ip=ip, mac=_gateway_mac(nb, src.switch),
                  port=port, expected=expected, load_balancer=lb, backend=pick,
                  other_backends=tuple(b for b in backends if b != pick))


def resolve_target(nb: Northbound, src: SwitchPort, kind: str, dst: str, protocol: str,
                   port: int | None, backend: str | None = None) -> Target:
    """The destination `dst` of `kind` ip | pod | svc, as seen from `src`."""
    if kind == "svc":
        return service_target(nb, src, dst, protocol, port, backend)
    if backend is not None:
        raise TraceError("--backend applies to a Service destination (`svc NAMESPACE/NAME`)")
    if kind == "pod":
        name = names.pod_port(*parse_pod(dst))
        found = nb.ports.get(name)
        if found is None or found.ipv4 is None:
            raise TraceError(f"no port {name} with an IPv4 address in NB: is the pod "
                             "running and kovn controller up?")
        ip = found.ipv4
    else:
        ip, found = dst, nb.port_with_ip(dst)
    mac = found.mac if found is not None and found.switch == src.switch else \
        _gateway_mac(nb, src.switch)
    vip_of = next((lb for lb, vips in sorted(nb.load_balancers.items())
                   if any(_split_hostport(vip)[0] == ip for vip in vips)), None)
    label = found.label if found is not None else (f"a VIP of {vip_of}" if vip_of else None)
    return Target(text=f"{ip} ({label})" if label else ip, ip=ip, mac=mac, port=port,
                  expected=found)


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def microflow(src: SwitchPort, target: Target, protocol: str) -> str:
    """The ovn-trace microflow of the first packet from `src` to `target`."""
    parts = [f"inport == {_quote(src.name)}", f"eth.src == {src.mac}", f"eth.dst == {target.mac}",
             f"ip4.src == {src.ipv4}", f"ip4.dst == {target.ip}", "ip.ttl == 64"]
    if protocol == "icmp":
        parts += ["icmp4.type == 8", "icmp4.code == 0"]
    else:
        parts += [f"{protocol}.src == {SOURCE_PORT}", f"{protocol}.dst == {target.port}"]
    return " && ".join(parts)


def acl_steps(steps: Iterable[Step]) -> list[Step]:
    return [s for s in steps if s.stage in ACL_STAGES and s.uuid]


def stage_hints(steps: Iterable[Step], lflows: Iterable[Mapping[str, object]]) -> dict[str, str]:
    """Traced flow uuid prefix -> the stage-hint of its SB Logical_Flow. `lflows` are rows
    `{"_uuid": str, "priority": int, "match": str, "external_ids": {...}}`."""
    rows = list(lflows)
    hints: dict[str, str] = {}
    for step in steps:
        found = [r for r in rows if str(r["_uuid"]).startswith(step.uuid)]
        if len(found) > 1:  # a shared 8-digit prefix: the flow's own priority and match decide
            found = [r for r in found if r["priority"] == step.priority
                     and r["match"] == step.match] or found
        ids = found[0].get("external_ids") if found else None
        if isinstance(ids, Mapping) and "stage-hint" in ids:
            hints[step.uuid] = str(ids["stage-hint"])
    return hints


def acl_for(step: Step, hint: str | None, acls: Mapping[str, Acl]) -> Acl | None:
    """The NB ACL a traced flow was generated from: the one whose uuid starts with the flow's
    stage-hint. Without a hint (the flow was replaced in SB between the trace and the
    lookup, or an OVN that writes none) the ACL whose match the flow's match ends with, at
    the flow's priority less northd's offset of 1000, in the stage's direction."""
    if hint:
        found = [a for uuid, a in acls.items() if uuid.startswith(hint)]
        if len(found) > 1:
            found = [a for a in found if a.match in step.match] or found
    else:
        direction = "to-lport" if step.stage.startswith("ls_out") else "from-lport"
        found = [a for a in acls.values() if a.direction == direction
                 and step.priority - a.priority == 1000 and a.match
                 and (step.match.endswith(f"({a.match})") or step.match.endswith(a.match))]
    if len(found) > 1:
        found = [a for a in found if step.priority - a.priority == 1000] or found
    return found[0] if len(found) == 1 else None


# --- the verdict ------------------------------------------------------------------------------

def describe_acl(acl: Acl) -> str:
    """What an ACL is for, in Kubernetes' terms when kovn wrote it."""
    ids = acl.external_ids
    role, policy = ids.get(names.ACL_ROLE_KEY), ids.get(names.POLICY_KEY, "?")
    direction, rule = ids.get(names.DIRECTION_KEY, ""), ids.get(names.RULE_KEY)
    if role == names.AclRole.POLICY:
        if rule is not None:
            return f"NetworkPolicy {policy}, {direction or '?'} rule {rule}"
        return f"NetworkPolicy {policy}" + (f" ({direction})" if direction else "")
    if role == names.AclRole.DEFAULT_DENY:
        return f"default deny of namespace {policy}" + (f" ({direction})" if direction else "")
    if role == names.AclRole.ALWAYS:
        what = _ALWAYS_WHAT.get(rule or "", rule or "?")
        return f"isolation exception for {what} (namespace {policy}, {direction or '?'})"
    owner_type, owner = ids.get(names.OWNER_TYPE_KEY), ids.get(names.OWNER_KEY)
    if owner_type == names.OwnerType.SUBNET:
        return f"Subnet {owner} (private)"
    if owner_type and owner:
        return f"{owner_type} {owner}"
    label = f'"{acl.name}"' if acl.name else acl.uuid[:8]
    return f"ACL {label} on {acl.holder or '?'} (not kovn's)"


def _direction(step: Step, acl: Acl) -> str:
    return acl.external_ids.get(names.DIRECTION_KEY) or (
        "ingress" if step.stage.startswith("ls_out") else "egress")


@dataclass(frozen=True)
class Verdict:
    word: str  # allowed | dropped | rejected
    reason: str
    hits: tuple[tuple[Step, Acl], ...] = ()
    delivered: tuple[str, ...] = ()
    last: Step | None = None

    @property
    def allowed(self) -> bool:
        return self.word == "allowed"


def _allow_reason(hits: Sequence[tuple[Step, Acl]]) -> str:
    deciders = [(s, a) for s, a in hits if a.action in _ALLOW and a.external_ids.get(
        names.ACL_ROLE_KEY) in (names.AclRole.POLICY, names.AclRole.ALWAYS)]
    if not deciders:
        return "(no NetworkPolicy applies)"
    seen = dict.fromkeys(describe_acl(a) for _, a in deciders)
    text = "by " + "; ".join(seen)
    covered = {_direction(s, a) for s, a in deciders}
    missing = [d for d in ("egress", "ingress") if d not in covered]
    if missing:
        text += f"; no NetworkPolicy applies to {' or '.join(missing)}"
    return text


def decide(steps: Sequence[Step], acls_by_uuid: Mapping[str, Acl], source: str,
           expected: str | None, load_balancer: str | None = None) -> Verdict:
    """The verdict of a trace: the first ACL that dropped or rejected, else whether the
    packet was delivered (to `expected`, or anywhere but back to `source`) and which ACLs
    allowed it. `acls_by_uuid` maps traced flow uuid prefixes to their NB ACLs; a reject in
    a load balancer stage is blamed on `load_balancer` (a Service without endpoints)."""
    hits: list[tuple[Step, Acl]] = []
    for step in steps:
        acl = acls_by_uuid.get(step.uuid) if step.stage in ACL_STAGES else None
        if acl is not None:
            hits.append((step, acl))
            if acl.action in ("drop", "reject"):
                word = "dropped" if acl.action == "drop" else "rejected"
                return Verdict(word, f"by {describe_acl(acl)}", tuple(hits), (), step)
    delivered = tuple(dict.fromkeys(
        port for s in steps for port, kind in s.outputs if kind not in INTERNAL_PORT_TYPES))
    reached = expected in delivered if expected else any(p != source for p in delivered)
    terminal = next((s for s in steps if s.drops or s.rejects), None)
    if reached:
        return Verdict("allowed", _allow_reason(hits), tuple(hits), delivered, None)
    if terminal is not None and terminal.rejects and load_balancer and "_lb" in terminal.stage:
        return Verdict("rejected", f"by load balancer {load_balancer} (no backends: the "
                       "Service has no ready endpoints)", tuple(hits), delivered, terminal)
    if terminal is not None:
        word = "rejected" if terminal.rejects else "dropped"
        if terminal.problem:
            why = f"in {terminal.where}: {terminal.problem}"
        elif terminal.stage in ACL_STAGES:
            why = (f"in {terminal.where} by logical flow {terminal.match!r}, which is no NB "
                   "ACL's (OVN's own conntrack rules)")
        else:
            why = f"in {terminal.where}, not by an ACL (logical flow {terminal.match!r})"
        return Verdict(word, why, tuple(hits), delivered, terminal)
    where = ", ".join(delivered) or "nowhere"
    return Verdict("dropped", f"(never reached {expected or 'a destination'}; delivered to "
                   f"{where})", tuple(hits), delivered, None)
