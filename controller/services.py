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
Node ports and the traffic policies' per-node backends are template load balancers, filled in
per chassis from the Nodes' Chassis_Template_Var (see load_balancers and
controller/templates.py): O(1) rows per Service however many nodes.

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
CLIENT_HASH = ("ip_dst", "ip_src")
"""ClientIP affinity by hashing the client's address: every connection of a client picks
the same backend while the backends stay the same, with no timeout. Used above OVN's cap on
the timeout, and on template load balancers (node ports, the Local policies): for a
template VIP ovn-northd 23.03 writes the affinity flows for IPv6 (`xxreg0 = ip6.dst`,
`ip6.dst == 10.16.0.2`) even with `address-family=ipv4`, so they never match (measured:
NodePort connections from the outside spread over every backend)."""
FIVE_TUPLE = ("ip_dst", "ip_src", "tp_dst", "tp_src")
"""selection_fields of every load balancer: the backend is picked by a hash the datapath
computes while translating (an OpenFlow select group with selection_method=hash) instead of
`dp_hash`, which costs a recirculation. The userspace datapath drops a packet after 6
recirculations ("Max recirculation depth exceeded" in ovs-vswitchd's log), and a node port
balanced to a pod on the same node takes exactly 7 with dp_hash on OVN 23.03: ovn-northd
cannot write the `lr_in_unsnat` skip flow for a template VIP, so the packet also passes the
SNAT zone's un-SNAT on its way in. Measured from the outside namespace, 2 nodes with one
backend each: with dp_hash 8 of 16 connections dropped (every one balanced to the pod on the
node it entered), with the hash 20 of 20 answered. It leaves a recirculation of headroom on
every other path too."""


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
        return {}, FIVE_TUPLE
    timeout = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get(
        "timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT
    if int(timeout) <= MAX_AFFINITY_TIMEOUT:
        return {"affinity_timeout": str(int(timeout))}, FIVE_TUPLE
    notes.append(f"sessionAffinity timeout {timeout}s is above OVN's cap of "
                 f"{MAX_AFFINITY_TIMEOUT}s: clients stick to a backend by hashing their "
                 "address (selection_fields ip_src, ip_dst) instead, with no timeout")
    return {}, CLIENT_HASH


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


def traffic_policies(service: Mapping[str, Any]) -> tuple[bool, bool]:
    """(externalTrafficPolicy Local, internalTrafficPolicy Local)."""
    spec = service.get("spec") or {}
    return (spec.get("externalTrafficPolicy") == "Local",
            spec.get("internalTrafficPolicy") == "Local")


def serves_locally(service: Mapping[str, Any]) -> bool:
    """Whether some of the Service's VIPs go to each node's own endpoints, which the Node
    then publishes in its Chassis_Template_Var (controller/templates.py)."""
    return bool(cluster_ips(service)) and any(traffic_policies(service))


def _local_var(namespace: str, name: str, protocol: str, port: Mapping[str, Any]) -> str:
    return names.local_endpoints_var(namespace, name, protocol, str(port.get("port")))


def local_endpoints(service: Mapping[str, Any],
                    slices: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Template variable -> {node: that node's backends of the Service port}, for each
    port of a Service that serves locally ({} otherwise). The same choice of endpoints as
    everywhere (ready ones, else serving terminating ones), then split by node."""
    if not serves_locally(service):
        return {}
    meta, spec = service.get("metadata") or {}, service.get("spec") or {}
    slices = list(slices)
    found: dict[str, dict[str, str]] = {}
    for port in spec.get("ports") or ():
        protocol = port.get("protocol") or "TCP"
        backends = _backends(slices, port.get("name") or "", protocol, {})
        per_node: dict[str, list[str]] = {}
        for target, node in backends:
            per_node.setdefault(node, []).append(target)
        found[_local_var(meta.get("namespace") or "", meta.get("name") or "", protocol,
                         port)] = {node: ",".join(t) for node, t in per_node.items() if node}
    return found


TEMPLATE = {"template": "true", "address-family": "ipv4"}
NODE_EXTERNAL_IP = "^" + names.NODE_EXTERNAL_IP_VAR


def load_balancers(service: Mapping[str, Any], slices: Iterable[Mapping[str, Any]],
                   gateway_nodes: Iterable[str] = ()) -> ServiceRows:
    """The Service's load balancers, the endpoints left out and notes. Per protocol, each
    only when it has VIPs, all in `clusterLBGroup` (every pod switch and gateway router):

    - `Service_<ns>/<name>_<PROTO>`: the cluster IPs (internalTrafficPolicy Cluster) and,
      with externalTrafficPolicy Cluster, the external and LoadBalancer IPs, to every
      endpoint.
    - `..._node`, a template load balancer: the node ports on `^NODE_EXTERNAL_IP`, which
      each chassis reads as its own node's external IP (its gateway router's address, to
      which the agent also DNATs the node ports of the node's own addresses), to every
      endpoint (the router's `lb_force_snat_ip` brings replies back through it); and, with
      internalTrafficPolicy Local, the cluster IPs to `^LOCAL_...`, the endpoints on the
      client's own node.
    - `..._local`, a template load balancer with `skip_snat` (the pod sees the client's
      address): with externalTrafficPolicy Local, the node ports to the node's own
      endpoints; a node without any has an empty value and does not answer.
    - with externalTrafficPolicy Local, its external and LoadBalancer IPs: per node of
      `gateway_nodes` (those with a gateway router) that has local endpoints, a plain
      load balancer on that router, `..._local_<node>`, `skip_snat`. Not a template: OVN
      23.03 answers ARP for a gateway router's plain VIPs only (measured: a template VIP
      got no ARP reply), and the outside must find these addresses on exactly the nodes
      that serve them, as a cloud's health check would.

    So a Service costs at most 3 rows per protocol however many nodes there are (plus one
    per serving node for Local external IPs); what differs per node is one element in each
    Node's Chassis_Template_Var.
    """
    meta, spec = service.get("metadata") or {}, service.get("spec") or {}
    namespace, name = meta.get("namespace") or "", meta.get("name") or ""
    owner = service_owner(f"{namespace}/{name}")
    ips = cluster_ips(service)
    if not ips:
        return ServiceRows()
    slices = list(slices)
    notes: list[str] = []
    left_out: dict[str, LeftOut] = {}
    affinity, selection = _affinity(spec, notes)
    external_local, internal_local = traffic_policies(service)
    with_node_ports = spec.get("type") in ("NodePort", "LoadBalancer")
    externals = external_ips(service)
    group = frozenset({LoadBalancerGroup.membership(names.CLUSTER_LB_GROUP)})
    gateway_nodes = sorted(set(gateway_nodes)) if external_local and externals else []
    rows = []
    for protocol in PROTOCOLS:
        ports = [p for p in spec.get("ports") or () if (p.get("protocol") or "TCP") == protocol]
        if not ports:
            continue
        cluster: dict[str, str] = {}
        per_node: dict[str, str] = {}
        local: dict[str, str] = {}
        on_node: dict[str, dict[str, str]] = {node: {} for node in gateway_nodes}
        for port in ports:
            backends = _backends(slices, port.get("name") or "", protocol, left_out)
            every = _joined(backends)
            mine = "^" + _local_var(namespace, name, protocol, port)
            inside = {f"{ip}:{port['port']}" for ip in ips}
            (per_node if internal_local else cluster).update(
                dict.fromkeys(inside, mine if internal_local else every))
            outside = {f"{ip}:{port['port']}" for ip in externals}
            if not external_local:
                cluster.update(dict.fromkeys(outside, every))
            for node in gateway_nodes:
                if on_this := _joined(backends, node):
                    on_node[node].update(dict.fromkeys(outside, on_this))
            node_port = port.get("nodePort") if with_node_ports else None
            if node_port:
                vip = f"{NODE_EXTERNAL_IP}:{node_port}"
                if external_local:
                    local[vip] = mine
                else:
                    per_node[vip] = every
        options = {"hairpin_snat_ip": HAIRPIN_SNAT_IP, **affinity}
        plain = (options, selection)
        templated = ({"hairpin_snat_ip": HAIRPIN_SNAT_IP}, CLIENT_HASH) if affinity else plain
        for lb_name, vips, extra, (base, fields) in (
                (names.load_balancer(namespace, name, protocol), cluster, {}, plain),
                (names.node_port_load_balancer(namespace, name, protocol), per_node, TEMPLATE,
                 templated),
                (names.local_load_balancer(namespace, name, protocol), local,
                 {**TEMPLATE, "skip_snat": "true"}, templated)):
            if vips:
                rows.append(_lb(owner, lb_name, protocol, vips, {**base, **extra}, fields,
                                group))
        for node, vips in on_node.items():
            if vips:
                rows.append(_lb(
                    owner, names.local_node_load_balancer(namespace, name, protocol, node),
                    protocol, vips, {**options, "skip_snat": "true"}, selection,
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

