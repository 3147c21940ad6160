"""Services: their load balancers, from the Service and its EndpointSlices.

A Service's rows are recomputed when the Service or any of its EndpointSlices changes (the
EndpointSlice kind is indexed by Service, and Services follow it); the plan then writes only
the VIPs that moved, element by element, so one endpoint change touches one row.
"""

from __future__ import annotations

import logging

from controller import services
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
    batch.rows[owner] = list(result.rows)
