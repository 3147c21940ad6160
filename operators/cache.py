"""The latest version of every watched object, indexes over them, and what changed.

Watches only store objects here and mark them dirty, which is cheap and never blocks; the
worker takes all dirty keys at once and reconciles them as one batch (one NB transaction
for many events). Level-triggered: only the latest object matters, so an event seen twice,
or ten events for one pod between two flushes, cost one reconcile.

Indexes (pods by namespace and by label, namespaces by label, ...) are kept up to date on
every store, and each kind may follow others: when an object of kind A changes, every
kind that follows A is asked, with the old and the new object, which of its keys that
dirties, so a label change dirties exactly the objects that select it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]


def key_of(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else meta["name"]


@dataclass(frozen=True)
class IndexSpec:
    """An index of one kind: `keys(obj)` are the index keys an object is filed under."""

    name: str
    keys: Callable[[Mapping[str, Any]], Iterable[Hashable]]


Fanout = Callable[["ClusterCache", Obj | None, Obj | None], Iterable[str]]
"""(cache, old, new) -> keys of the following kind that a change of the followed kind
dirties. Runs under the cache's lock: read the cache, never wait on anything."""


@dataclass(frozen=True)
class CacheKind:
    """What the cache needs to know about a kind: its indexes and whom it follows."""

    name: str
    indexes: tuple[IndexSpec, ...] = ()
    follows: Mapping[str, Fanout] = field(default_factory=dict)


class Dirty(dict[str, set[str]]):
    """Dirty keys per kind."""

    def of(self, kind: str) -> set[str]:
        return self.setdefault(kind, set())

    def __bool__(self) -> bool:
        return any(self.values())

    def total(self) -> int:
        return sum(len(keys) for keys in self.values())


class ClusterCache:
    def __init__(self, kinds: Iterable[CacheKind]) -> None:
        self.kinds = {k.name: k for k in kinds}
        self.objects: dict[str, dict[str, Obj]] = {name: {} for name in self.kinds}
        self._index: dict[str, dict[str, dict[Hashable, set[str]]]] = {
            name: {i.name: {} for i in k.indexes} for name, k in self.kinds.items()}
        self._followers: dict[str, list[tuple[str, Fanout]]] = {}
        for name, spec in self.kinds.items():
            for followed, fanout in spec.follows.items():
                self._followers.setdefault(followed, []).append((name, fanout))
        self._dirty = Dirty()
        self._changed = threading.Condition(threading.RLock())

    # --- writes (watch threads) --------------------------------------------------------------
    def store(self, kind: str, obj: Obj, quiet: bool = False) -> None:
        """`quiet`: the worker storing a derived object it handles itself in this flush
        (its own kind is not marked dirty; its followers still are)."""
        with self._changed:
            self._put(kind, key_of(obj), obj, quiet)
            self._changed.notify()

    def forget(self, kind: str, obj: Mapping[str, Any], quiet: bool = False) -> None:
        with self._changed:
            self._put(kind, key_of(obj), None, quiet)
            self._changed.notify()

    def replace_all(self, kind: str, objs: Iterable[Obj]) -> None:
        """A complete listing: the cache holds exactly these; what vanished and everything
        listed is dirty (a relist after 410 may hide any number of changes)."""
        with self._changed:
            fresh = {key_of(o): o for o in objs}
            for key in set(self.objects[kind]) - set(fresh):
                self._put(kind, key, None)
            for key, obj in fresh.items():
                self._put(kind, key, obj)
            self._changed.notify()

    def mark(self, kind: str, keys: Iterable[str]) -> None:
        with self._changed:
            self._dirty.of(kind).update(keys)
            self._changed.notify()

    def _put(self, kind: str, key: str, obj: Obj | None, quiet: bool = False) -> None:
        old = self.objects[kind].get(key)
        if obj is None:
            self.objects[kind].pop(key, None)
        else:
            self.objects[kind][key] = obj
        for index in self.kinds[kind].indexes:
            table = self._index[kind][index.name]
            if old is not None:
                for ikey in index.keys(old):
                    keys = table.get(ikey)
                    if keys is not None:
                        keys.discard(key)
                        if not keys:
                            del table[ikey]
            if obj is not None:
                for ikey in index.keys(obj):
                    table.setdefault(ikey, set()).add(key)
        if not quiet:
            self._dirty.of(kind).add(key)
        for follower, fanout in self._followers.get(kind, ()):
            self._dirty.of(follower).update(fanout(self, old, obj))

    # --- reads -------------------------------------------------------------------------------
    def get(self, kind: str, key: str) -> Obj | None:
        with self._changed:
            return self.objects[kind].get(key)

    def snapshot(self, kind: str) -> dict[str, Obj]:
        with self._changed:
            return dict(self.objects[kind])

    def indexed(self, kind: str, index: str, ikey: Hashable) -> set[str]:
        """Keys of the objects of `kind` filed under `ikey` in `index`."""
        with self._changed:
            return set(self._index[kind][index].get(ikey, ()))

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
