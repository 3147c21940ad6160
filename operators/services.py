"""Services: their load balancers, from the Service and its EndpointSlices.

A Service's rows are recomputed when the Service or any of its EndpointSlices changes (the
EndpointSlice kind is indexed by Service, and Services follow it), and, for the Services
with per-node rows (node ports, externalTrafficPolicy Local), when a node's gateway comes,
goes or moves; the plan then writes only the VIPs that moved, element by element, so one endpoint
change touches one row.
"""

from __future__ import annotations

import logging
from typing import Any

from contract.gateway import EXTERNAL_GATEWAY, EXTERNAL_IP
from controller import services
from northbound import names
from operators import nodes
from operators.cache import Dirty, Obj
from operators.selection import SERVICE_INDEX
from operators.state import Batch, State

LOG = logging.getLogger(__name__)


def slices_of(state: State, key: str) -> list[dict]:
    found = (state.cache.get("endpointslices", k)
             for k in sorted(state.cache.indexed("endpointslices", SERVICE_INDEX, key)))
    return [s for s in found if s is not None]


def gateways(state: State) -> dict[str, tuple[str, ...]]:
    """Node -> its gateway router's addresses that serve node ports (its external IP), for
    the nodes that have a gateway router."""
    found = {}
    for name, obj in sorted(state.cache.snapshot("nodes").items()):
        external = nodes.external_network_of(state, name, obj)
        if external is not None:
            found[name] = (external.address,)
    return found


def uses_nodes(service: Obj) -> bool:
    """Rows per node's gateway: node ports, and externalTrafficPolicy Local."""
    spec = service.get("spec") or {}
    return (spec.get("type") in ("NodePort", "LoadBalancer")
            or spec.get("externalTrafficPolicy") == "Local")


def sync_service(state: State, batch: Batch, key: str) -> None:
    owner = services.service_owner(key)
    obj = state.cache.get("services", key)
    if obj is None:
        batch.rows[owner] = []
        return
    result = services.load_balancers(obj, slices_of(state, key),
                                     gateways(state) if uses_nodes(obj) else None)
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
    Services whose rows are per node (node ports, externalTrafficPolicy Local)."""
    def external(obj: Obj | None) -> Any:
        if obj is None:
            return None
        notes = obj["metadata"].get("annotations") or {}
        return notes.get(EXTERNAL_IP), notes.get(EXTERNAL_GATEWAY)

    if external(old) == external(new):
        return []
    return [key for key, svc in cache.snapshot("services").items() if uses_nodes(svc)]
