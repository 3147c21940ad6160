"""Services + EndpointSlices -> OVN load balancers. Pure: objects in, rows and notes out.

One Load_Balancer per (Service, protocol), `Service_<ns>/<name>_<PROTO>`, with one VIP per
(cluster IP, port): `"<clusterIP>:<port>" -> "<ep>:<targetPort>,..."`. kube-proxy's choice
of backends: the ready endpoints; only when none is ready, the serving endpoints that are
terminating (so a rolling update never drops a Service to zero). The target port comes from
the EndpointSlice port of the same name, which the EndpointSlice controller resolved per pod,
so named targetPorts work even when pods number their ports differently.

A VIP with no backend rejects (`options:reject=true`: a TCP RST or ICMP unreachable from
ovn-controller within a round trip, never a timeout), and `event=false` keeps ovn-controller
from reporting every such packet. Every load balancer joins `clusterLBGroup` (member side:
one mutation per new Service), which every pod switch and gateway router references.

Headless Services (`clusterIP: None`) and ExternalName Services create nothing.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from northbound import names
from northbound.rows import (
    DNS,
    LoadBalancer,
    LoadBalancerGroup,
    LogicalRouter,
    LogicalSwitch,
    Membership,
    Owner,
)

HAIRPIN_SNAT_IP = "169.254.169.5"
"""The source a pod sees when it reaches itself through its own Service: one fixed
link-local address, so a NetworkPolicy can allow hairpin traffic with one rule."""
MAX_AFFINITY_TIMEOUT = 65535
"""OVN's cap on options:affinity_timeout (seconds)."""
DEFAULT_AFFINITY_TIMEOUT = 10800
"""Kubernetes' default sessionAffinityConfig.clientIP.timeoutSeconds."""
PROTOCOLS = ("TCP", "UDP", "SCTP")


def service_owner(key: str) -> Owner:
    """`key` is `namespace/name`."""
    return Owner(names.OwnerType.SERVICE, key)


@dataclass(frozen=True)
class LeftOut:
    """An endpoint that is not a backend, and why (for `kovn show service`)."""

    address: str
    reason: str


@dataclass(frozen=True)
class ServiceRows:
    rows: tuple[LoadBalancer, ...] = ()
    left_out: tuple[LeftOut, ...] = ()
    notes: tuple[str, ...] = ()
    """Things worth one log line (e.g. an affinity timeout above OVN's cap)."""


@dataclass
class _Backends:
    ready: list[tuple[str, str]] = field(default_factory=list)
    fallback: list[tuple[str, str]] = field(default_factory=list)


Backend = tuple[str, str]
"""(`ip:port`, the endpoint's nodeName or "")."""


def cluster_ips(service: Mapping[str, Any]) -> list[str]:
    """The Service's IPv4 cluster IPs; [] for headless and ExternalName Services."""
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return []
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    found = []
    for ip in ips:
        if ip in ("None", ""):
            continue
        try:
            if ipaddress.ip_address(ip).version == 4:
                found.append(ip)
        except ValueError:
            continue
    return found


def _conditions(endpoint: Mapping[str, Any]) -> tuple[bool, bool, bool]:
    """(ready, serving, terminating); unset ready/serving mean true, as the API says."""
    cond = endpoint.get("conditions") or {}
    ready = cond.get("ready") is not False
    serving = cond.get("serving", ready) is not False
    return ready, serving, bool(cond.get("terminating"))


def _backends(slices: Iterable[Mapping[str, Any]], port_name: str, protocol: str,
              left_out: dict[str, LeftOut]) -> list[Backend]:
    """Backends of the Service port named `port_name` over all its slices, with their node."""
    found = _Backends()
    for slc in slices:
        if slc.get("addressType", "IPv4") != "IPv4":
            continue
        number = next((p.get("port") for p in slc.get("ports") or ()
                       if (p.get("name") or "") == port_name
                       and (p.get("protocol") or "TCP") == protocol), None)
        if number is None:
            continue
        for endpoint in slc.get("endpoints") or ():
            ready, serving, terminating = _conditions(endpoint)
            node = endpoint.get("nodeName") or ""
            for address in endpoint.get("addresses") or ():
                target = (f"{address}:{number}", node)
                if ready:
                    found.ready.append(target)
                elif serving and terminating:
                    found.fallback.append(target)
                else:
                    reason = "terminating" if terminating else "not ready"
                    left_out[address] = LeftOut(address, reason)
    if found.ready:
        for target, _node in found.fallback:
            address = target.rsplit(":", 1)[0]
            left_out[address] = LeftOut(address, "terminating (ready endpoints exist)")
        return sorted(set(found.ready))
    return sorted(set(found.fallback))


def _joined(backends: Iterable[Backend], node: str | None = None) -> str:
    return ",".join(t for t, n in backends if node is None or n == node)


def _affinity(spec: Mapping[str, Any], notes: list[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    if spec.get("sessionAffinity") != "ClientIP":
        return {}, ()
    timeout = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get(
        "timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT
    if int(timeout) <= MAX_AFFINITY_TIMEOUT:
        return {"affinity_timeout": str(int(timeout))}, ()
    notes.append(f"sessionAffinity timeout {timeout}s is above OVN's cap of "
                 f"{MAX_AFFINITY_TIMEOUT}s: clients stick to a backend by hashing their "
                 "address (selection_fields ip_src, ip_dst) instead, with no timeout")
    return {}, ("ip_dst", "ip_src")


def external_ips(service: Mapping[str, Any]) -> list[str]:
    """The Service's `spec.externalIPs` and, for type LoadBalancer, its
    `status.loadBalancer.ingress` IPs (what the cloud, here the sandbox, assigned): IPv4."""
    spec, status = service.get("spec") or {}, service.get("status") or {}
    found = list(spec.get("externalIPs") or ())
    if spec.get("type") == "LoadBalancer":
        found += [i.get("ip") for i in (status.get("loadBalancer") or {}).get("ingress") or ()
                  if i.get("ip")]
    return sorted({ip for ip in found if _is_ipv4(ip)})


def _is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def _lb(owner: Owner, name: str, protocol: str, vips: dict[str, str], options: dict[str, str],
        selection: tuple[str, ...], member_of: frozenset[Membership]) -> LoadBalancer:
    if not all(vips.values()):
        options = {**options, "reject": "true", "event": "false"}
    return LoadBalancer(owner=owner, name=name, protocol=protocol.lower(), vips=vips,
                        options=options, selection_fields=selection, member_of=member_of)


def load_balancers(service: Mapping[str, Any], slices: Iterable[Mapping[str, Any]],
                   gateways: Mapping[str, tuple[str, ...]] | None = None) -> ServiceRows:
    """The Service's load balancers, the endpoints left out and notes.

    `gateways` maps each node that has a gateway router to the router's addresses that
    serve node ports: its external IP (to which the node's agent also DNATs the node ports
    of the node's own addresses, node/nodeports.py). Per protocol:
    the cluster load balancer (cluster IPs; with externalTrafficPolicy Cluster also the
    external and LoadBalancer IPs), in `clusterLBGroup`; and per node a load balancer on its
    gateway router for the node ports on its addresses: with policy Cluster every endpoint
    (the router's `lb_force_snat_ip` brings replies back through it), with policy Local
    only the node's own endpoints and `skip_snat` (the pod sees the client's address), the
    external IPs too, and none at all on a node without local endpoints, which so does not
    serve them (its router refuses the connection).

    Why not one template load balancer (`^NODE_EXTERNAL_IP:<nodePort>`, Chassis_Template_Var):
    measured on OVN 23.03.1 with the userspace datapath, a template VIP on the gateway
    router's own address answered only when the chosen backend ran on another node (0 of 5
    connections to a same-node backend; a plain VIP with the same backends: all of them).
    The only difference in the logical flows is the `lr_in_unsnat` skip flow ovn-northd
    writes for a plain VIP (it cannot for a template one). So node ports cost one row per
    (Service, protocol, node), written as element diffs like every VIP.
    """
    meta, spec = service.get("metadata") or {}, service.get("spec") or {}
    namespace, name = meta.get("namespace") or "", meta.get("name") or ""
    owner = service_owner(f"{namespace}/{name}")
    ips = cluster_ips(service)
    if not ips:
        return ServiceRows()
    gateways = gateways or {}
    slices = list(slices)
    notes: list[str] = []
    left_out: dict[str, LeftOut] = {}
    affinity, selection = _affinity(spec, notes)
    local = spec.get("externalTrafficPolicy") == "Local"
    with_node_ports = spec.get("type") in ("NodePort", "LoadBalancer")
    externals = external_ips(service)
    group = frozenset({LoadBalancerGroup.membership(names.CLUSTER_LB_GROUP)})
    rows = []
    for protocol in PROTOCOLS:
        ports = [p for p in spec.get("ports") or () if (p.get("protocol") or "TCP") == protocol]
        if not ports:
            continue
        vips: dict[str, str] = {}
        per_node: dict[str, dict[str, str]] = {node: {} for node in gateways}
        for port in ports:
            backends = _backends(slices, port.get("name") or "", protocol, left_out)
            every = _joined(backends)
            vips.update({f"{ip}:{port['port']}": every for ip in ips})
            outside = [f"{ip}:{port['port']}" for ip in externals]
            node_port = port.get("nodePort") if with_node_ports else None
            if not local:
                vips.update({vip: every for vip in outside})
            for node, addresses in gateways.items():
                mine = _joined(backends, node) if local else every
                if local and not mine:
                    continue
                if local:
                    per_node[node].update({vip: mine for vip in outside})
                if node_port:
                    per_node[node].update({f"{a}:{node_port}": mine for a in addresses})
        options = {"hairpin_snat_ip": HAIRPIN_SNAT_IP, **affinity}
        rows.append(_lb(owner, names.load_balancer(namespace, name, protocol), protocol, vips,
                        options, selection, group))
        node_options = {"skip_snat": "true", **affinity} if local else dict(affinity)
        for node, node_vips in sorted(per_node.items()):
            if node_vips:
                rows.append(_lb(
                    owner, names.node_load_balancer(namespace, name, protocol, node),
                    protocol, node_vips, node_options, selection,
                    frozenset({LogicalRouter.membership(names.gateway_router(node),
                                                        "load_balancer")})))
    if left_out:
        shown = "; ".join(f"{o.address} {o.reason}" for o in
                          sorted(left_out.values(), key=lambda o: o.address))
        rows = [dataclasses.replace(r, extra_ids={names.LEFT_OUT_KEY: shown}) for r in rows]
    return ServiceRows(tuple(rows), tuple(left_out.values()), tuple(notes))


def service_names(namespace: str, name: str, domain: str) -> tuple[str, ...]:
    """The names a pod resolves the Service by, each answered in one query.

    OVN answers only exact names, and glibc stops walking the search path at the first
    query nobody answers (a timeout is TRY_AGAIN, not NXDOMAIN), so every form a user types
    is a record of its own: `<svc>.<ns>.svc.<domain>`, `<svc>.<ns>.svc` and `<svc>.<ns>`
    (asked as typed with `ndots:1`), while a bare `<svc>` becomes the full name through the
    first entry of the pod's search path. `<svc>.<ns>` shadows a real domain of the same
    name (a Service `example` in a namespace `com`), as it does in any cluster whose pods
    search `svc.<domain>` first."""
    return (f"{name}.{namespace}.svc.{domain}".lower(), f"{name}.{namespace}.svc".lower(),
            f"{name}.{namespace}".lower())


def dns_row(service: Mapping[str, Any], switches: Iterable[str], domain: str) -> DNS | None:
    """The Service's names -> its cluster IPs, held by every pod switch (member side), so
    ovn-controller answers them for every pod; None for headless/ExternalName Services."""
    meta = service.get("metadata") or {}
    ips = cluster_ips(service)
    if not ips:
        return None
    key = f"{meta.get('namespace')}/{meta.get('name')}"
    address = " ".join(ips)
    return DNS(owner=service_owner(key), row_key=f"dns:{key}",
               records={n: address for n in service_names(meta["namespace"], meta["name"],
                                                          domain)},
               member_of=frozenset(LogicalSwitch.membership(s, "dns_records")
                                   for s in sorted(switches)))

