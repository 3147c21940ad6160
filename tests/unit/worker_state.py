"""An operators.state.State for the sync functions' unit tests: the real cache of every kind,
the given subnets, and an API that only records Events (the API writes a sync asks for are
closures in its Batch, which these tests read rather than run)."""

from __future__ import annotations

from collections.abc import Iterable

from controller.config import ClusterConfig
from controller.subnets import Binding, SubnetSpec
from operators.cache import ClusterCache
from operators.kinds import KINDS
from operators.state import State


class EventLog:
    """The one API call a sync makes itself: an Event about an object."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def event(self, obj: dict, reason: str, message: str, kind: str = "Warning") -> None:
        self.events.append((reason, message))


def worker_state(config: ClusterConfig, subnets: Iterable[SubnetSpec],
                 objects: Iterable[tuple[str, dict]] = (), default_subnet: str = "",
                 pools: bool = False) -> State:
    """`objects`: (cache kind, object) pairs stored first. `pools`: an IPAM pool per subnet."""
    state = State(config=config, kube=EventLog(),  # type: ignore[arg-type]
                  cache=ClusterCache([k.cache_kind() for k in KINDS]),
                  binding=Binding(default=default_subnet))
    state.subnets = {s.name: s for s in subnets}
    if pools:
        for spec in state.subnets.values():
            state.ipam.set_pool(spec.name, spec.cidr, spec.gateway)
    for kind, obj in objects:
        state.cache.store(kind, obj)
    return state
