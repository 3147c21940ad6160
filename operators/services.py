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
from operators.endpoints import LOCAL_INDEX, slices_of
from operators.nodes import external_network_of
from operators.state import Batch, State

LOG = logging.getLogger(__name__)


def gateway_nodes(state: State) -> list[str]:
    """The nodes that have a gateway router."""
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
