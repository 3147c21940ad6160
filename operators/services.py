"""Services: their load balancers, from the Service and its EndpointSlices.

A Service's rows are recomputed when the Service or any of its EndpointSlices changes (the
EndpointSlice kind is indexed by Service, and Services follow it); the plan then writes only
the VIPs that moved, element by element, so one endpoint change touches one row. Nodes come
and go without touching them: what differs per node lives in each Node's
Chassis_Template_Var (controller/templates.py), which follows the Services that serve
locally and their EndpointSlices (the nodes of their endpoints).
"""

from __future__ import annotations

import logging
from typing import Any

from contract.gateway import EXTERNAL_GATEWAY, EXTERNAL_IP
from controller import services
from northbound import names
from operators.cache import Dirty, Obj
from operators.selection import SERVICE_INDEX, service_keys
from operators.state import Batch, State

LOG = logging.getLogger(__name__)


def slices_of(state: State, key: str) -> list[dict]:
    found = (state.cache.get("endpointslices", k)
             for k in sorted(state.cache.indexed("endpointslices", SERVICE_INDEX, key)))
    return [s for s in found if s is not None]


LOCAL_INDEX = "serves-locally"


def local_keys(obj: Obj) -> tuple[str, ...]:
    """Index of the Services whose VIPs go to each node's own endpoints, so a Node's
    translator finds them without scanning every Service."""
    return ("local",) if services.serves_locally(obj) else ()


def local_services(state: State) -> list[tuple[Obj, list[dict]]]:
    """(Service, its EndpointSlices) for every Service that serves locally."""
    found = []
    for key in sorted(state.cache.indexed("services", LOCAL_INDEX, "local")):
        svc = state.cache.get("services", key)
        if svc is not None:
            found.append((svc, slices_of(state, key)))
    return found


def gateway_nodes(state: State) -> list[str]:
    """The nodes that have a gateway router."""
    from operators.nodes import external_network_of  # nodes imports this module

    return [name for name, obj in sorted(state.cache.snapshot("nodes").items())
            if external_network_of(state, name, obj) is not None]


def serves_outside_locally(service: Obj) -> bool:
    """externalTrafficPolicy Local with external or LoadBalancer IPs: rows on the
    gateway routers of the nodes with endpoints."""
    return (services.traffic_policies(service)[0]
            and bool(services.external_ips(service)))


def sync_service(state: State, batch: Batch, key: str) -> None:
    owner = services.service_owner(key)
    obj = state.cache.get("services", key)
    if obj is None:
        batch.rows[owner] = []
        return
    result = services.load_balancers(obj, slices_of(state, key),
                                     gateway_nodes(state) if serves_outside_locally(obj)
                                     else ())
    for note in result.notes:
        state.report(f"service-note/{key}", obj, "ServiceNote", note, kind="Normal")
    rows: list = list(result.rows)
    if state.config.service_dns:
        dns = services.dns_row(obj, [names.subnet_switch(s) for s in state.subnets],
                               state.config.dns_domain)
        if dns is not None:
            rows.append(dns)
    batch.rows[owner] = rows


def follow_subnets(state: State, dirty: Dirty) -> None:
    """Service names are held by every pod switch: a new or removed switch moves them all."""
    if state.config.service_dns:
        dirty.of("services").update(state.cache.snapshot("services"))


def follow_nodes(cache: Any, old: Obj | None, new: Obj | None) -> list[str]:
    """A node's gateway (its external annotations) coming, going or moving concerns the
    Services with rows on the gateway routers of their endpoints' nodes."""
    def external(obj: Obj | None) -> Any:
        if obj is None:
            return None
        notes = obj["metadata"].get("annotations") or {}
        return notes.get(EXTERNAL_IP), notes.get(EXTERNAL_GATEWAY)

    if external(old) == external(new):
        return []
    return [key for key in cache.indexed("services", LOCAL_INDEX, "local")
            if (svc := cache.get("services", key)) is not None and serves_outside_locally(svc)]


def nodes_follow_services(cache: Any, old: Obj | None, new: Obj | None) -> list[str]:
    """A Service starting, stopping or changing (its ports) to serve locally changes a
    variable of every Node's Chassis_Template_Var."""
    def local_ports(obj: Obj | None) -> Any:
        if obj is None or not services.serves_locally(obj):
            return None
        return [(p.get("port"), p.get("protocol")) for p in obj["spec"].get("ports") or ()]

    if local_ports(old) == local_ports(new):
        return []
    return list(cache.snapshot("nodes"))


def nodes_follow_slices(cache: Any, old: Obj | None, new: Obj | None) -> set[str]:
    """An EndpointSlice of a Service that serves locally concerns the nodes of its
    endpoints, before and after."""
    found: set[str] = set()
    for obj in (old, new):
        if obj is None:
            continue
        if not any((svc := cache.get("services", k)) is not None
                   and services.serves_locally(svc) for k in service_keys(obj)):
            continue
        found.update(e["nodeName"] for e in obj.get("endpoints") or () if e.get("nodeName"))
    return found
