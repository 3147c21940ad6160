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
from northbound.rows import DNS, LoadBalancer, LoadBalancerGroup, LogicalSwitch, Owner

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
    ready: list[str] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)


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
              left_out: dict[str, LeftOut]) -> list[str]:
    """Backends (`ip:port`) of the Service port named `port_name` over all its slices."""
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
            for address in endpoint.get("addresses") or ():
                target = f"{address}:{number}"
                if ready:
                    found.ready.append(target)
                elif serving and terminating:
                    found.fallback.append(target)
                else:
                    reason = "terminating" if terminating else "not ready"
                    left_out[address] = LeftOut(address, reason)
    if found.ready:
        for target in found.fallback:
            address = target.rsplit(":", 1)[0]
            left_out[address] = LeftOut(address, "terminating (ready endpoints exist)")
        return sorted(set(found.ready))
    return sorted(set(found.fallback))


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


def load_balancers(service: Mapping[str, Any],
                   slices: Iterable[Mapping[str, Any]]) -> ServiceRows:
    """The Service's load balancers, the endpoints left out and notes."""
    meta, spec = service.get("metadata") or {}, service.get("spec") or {}
    key = f"{meta.get('namespace')}/{meta.get('name')}"
    ips = cluster_ips(service)
    if not ips:
        return ServiceRows()
    slices = list(slices)
    notes: list[str] = []
    left_out: dict[str, LeftOut] = {}
    affinity, selection = _affinity(spec, notes)
    rows = []
    for protocol in PROTOCOLS:
        ports = [p for p in spec.get("ports") or () if (p.get("protocol") or "TCP") == protocol]
        if not ports:
            continue
        vips: dict[str, str] = {}
        for port in ports:
            backends = ",".join(_backends(slices, port.get("name") or "", protocol, left_out))
            for ip in ips:
                vips[f"{ip}:{port['port']}"] = backends
        options = {"hairpin_snat_ip": HAIRPIN_SNAT_IP, **affinity}
        if not all(vips.values()):
            options.update(reject="true", event="false")
        rows.append(LoadBalancer(
            owner=service_owner(key),
            name=names.load_balancer(meta["namespace"], meta["name"], protocol),
            protocol=protocol.lower(), vips=vips, options=options,
            selection_fields=selection,
            member_of=frozenset({LoadBalancerGroup.membership(names.CLUSTER_LB_GROUP)})))
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

