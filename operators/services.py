"""Services: their load balancers, from the Service and its EndpointSlices.

A Service's rows are recomputed when the Service or any of its EndpointSlices changes (the
EndpointSlice kind is indexed by Service, and Services follow it); the plan then writes only
the VIPs that moved, element by element, so one endpoint change touches one row.
"""

from __future__ import annotations

import logging

from controller import services
from northbound import names
from operators.cache import Dirty
from operators.selection import SERVICE_INDEX
from operators.state import Batch, State

LOG = logging.getLogger(__name__)


def slices_of(state: State, key: str) -> list[dict]:
    found = (state.cache.get("endpointslices", k)
             for k in sorted(state.cache.indexed("endpointslices", SERVICE_INDEX, key)))
    return [s for s in found if s is not None]


def sync_service(state: State, batch: Batch, key: str) -> None:
    owner = services.service_owner(key)
    obj = state.cache.get("services", key)
    if obj is None:
        batch.rows[owner] = []
        return
    result = services.load_balancers(obj, slices_of(state, key))
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
