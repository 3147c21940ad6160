"""The latest version of every object the controller cares about, and what changed.

Watch handlers only store objects here and mark them dirty, which is cheap and never blocks;
the worker takes all dirty keys at once and reconciles them as one batch (one NB transaction
for many events). Level-triggered: only the latest object matters, so an event seen twice,
or ten events for one pod between two flushes, cost one reconcile.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

KINDS = ("subnets", "namespaces", "nodes", "pods")


def key_of(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else meta["name"]


@dataclass
class Dirty:
    subnets: set[str] = field(default_factory=set)
    namespaces: set[str] = field(default_factory=set)
    nodes: set[str] = field(default_factory=set)
    pods: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.subnets or self.namespaces or self.nodes or self.pods)

    def total(self) -> int:
        return len(self.subnets) + len(self.namespaces) + len(self.nodes) + len(self.pods)


class ClusterCache:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
        self._dirty = Dirty()
        self._changed = threading.Condition()

    def store(self, kind: str, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        with self._changed:
            self.objects[kind][key] = obj
            getattr(self._dirty, kind).add(key)
            self._changed.notify()

    def forget(self, kind: str, obj: Mapping[str, Any]) -> None:
        key = key_of(obj)
        with self._changed:
            self.objects[kind].pop(key, None)
            getattr(self._dirty, kind).add(key)
            self._changed.notify()

    def mark(self, kind: str, keys: set[str] | list[str]) -> None:
        with self._changed:
            getattr(self._dirty, kind).update(keys)
            self._changed.notify()

    def replace_all(self, kind: str, objs: list[dict[str, Any]]) -> None:
        """A full listing: the cache holds exactly these (used at start)."""
        with self._changed:
            self.objects[kind] = {key_of(o): o for o in objs}

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        with self._changed:
            return self.objects[kind].get(key)

    def snapshot(self, kind: str) -> dict[str, dict[str, Any]]:
        with self._changed:
            return dict(self.objects[kind])

    def take_dirty(self, timeout: float) -> Dirty:
        """Wait up to `timeout` for something to change, then hand over every dirty key."""
        with self._changed:
            if not self._dirty:
                self._changed.wait(timeout)
            dirty, self._dirty = self._dirty, Dirty()
            return dirty

    def wake(self) -> None:
        with self._changed:
            self._changed.notify()
