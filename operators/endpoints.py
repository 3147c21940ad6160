"""What Services and Nodes both read: a Service's EndpointSlices, and the Services that
serve locally (externalTrafficPolicy or internalTrafficPolicy Local), whose endpoints each
Node publishes in its Chassis_Template_Var (controller/templates.py), so Nodes follow those
Services and their EndpointSlices."""

from __future__ import annotations

from typing import Any

from controller import services
from operators.cache import Obj
from operators.selection import SERVICE_INDEX, service_keys
from operators.state import State


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
