"""The controller's worker: start-up recovery, batched flushes, periodic full reconcile.

One thread owns IPAM and NB writes. Each flush takes every dirty key, computes the rows of
those objects kind by kind (operators/kinds.py, in dependency order), writes them in ONE NB
transaction scoped to their owners, and then publishes annotations (in parallel, the API
server being the slow part). A full reconcile (at start and every `resync` seconds)
rebuilds every row from the cache and lets the reconciler delete whatever kovn owns that no
object explains: ports of pods deleted while it was down, drift.

One bad object never stops the others: a translation that raises, or rows NB refuses, set
just that owner aside (operators/faults.py): an Event on its object, its old rows left as
they are, a retry with backoff, while every other owner's rows commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor

from controller import topology
from controller.config import ClusterConfig
from kube.listwatch import ListWatch
from northbound.connection import NorthboundUnavailable
from northbound.reconciler import Reconciler
from northbound.rows import CLUSTER, NbRow, Owner
from operators import subnets
from operators.cache import ClusterCache, Dirty, Obj
from operators.faults import write_isolated
from operators.kinds import DERIVED, KINDS, KOPF, LISTWATCH, Kind
from operators.kubeapi import SUBNETS, KubeAPI, KubeError, subnet_path
from operators.metrics import ControllerMetrics
from operators.state import Batch, Publish, State

LOG = logging.getLogger(__name__)
Rows = dict[Owner, tuple[NbRow, ...]]


class CacheListener:
    """Feeds one kind's list+watch into the cache, slimmed."""

    def __init__(self, cache: ClusterCache, kind: Kind) -> None:
        self.cache, self.kind = cache, kind

    def listed(self, items: list[Obj]) -> None:
        self.cache.replace_all(self.kind.name, [self.kind.slim(o) for o in items])

    def event(self, kind: str, obj: Obj) -> None:
        if kind == "DELETED":
            self.cache.forget(self.kind.name, self.kind.slim(obj))
        else:
            self.cache.store(self.kind.name, self.kind.slim(obj))


class Controller:
    def __init__(self, config: ClusterConfig, kube: KubeAPI, reconciler: Reconciler,
                 resync: float = 60.0, publishers: int = 16,
                 kinds: Sequence[Kind] = KINDS, metrics: ControllerMetrics | None = None,
                 may_write: Callable[[], bool] = lambda: True) -> None:
        self.kinds = tuple(kinds)
        self.may_write = may_write  # leadership (operators/leader.py): else nothing is written
        self.by_owner_type = {str(k.owner_type): k for k in self.kinds if k.owner_type}
        cache = ClusterCache(k.cache_kind() for k in self.kinds)
        self.state = State(config=config, kube=kube, cache=cache)
        self.reconciler = reconciler
        self.resync = resync
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(publishers, thread_name_prefix="kovn-publish")
        self._thread: threading.Thread | None = None
        self.watches = [ListWatch(kube, k.path, CacheListener(cache, k), name=k.name)
                        for k in self.kinds if k.watch == LISTWATCH]
        self._last_full = 0.0
        self._last_usage = 0.0
        self.last_tick = time.monotonic()
        """When the worker's loop last came round (liveness: operators/probes.py)."""
        self.metrics = metrics if metrics is not None else ControllerMetrics()
        self.metrics.watch(self)
        reconciler.on_transaction = self.metrics.nb_transaction

    @property
    def cache(self) -> ClusterCache:
        return self.state.cache

    @property
    def last_full_resync(self) -> float:
        """time.monotonic() of the last full reconcile's start (0: none yet)."""
        return self._last_full

    def worker_problem(self, stuck_after: float) -> str | None:
        """Why the worker is not doing its job (None: it is, or it has not started yet)."""
        thread = self._thread
        if thread is None or self._stop.is_set():
            return None
        if not thread.is_alive():
            return "the controller's worker thread has exited (see the log); restart it"
        idle = time.monotonic() - self.last_tick
        if idle > stuck_after:
            return (f"the controller's worker loop has not come round for {idle:.0f}s "
                    f"(more than {stuck_after:.0f}s): a flush is stuck")
        return None

    # --- start -----------------------------------------------------------------------------
    def start(self) -> None:
        """List everything, rebuild IPAM from annotations (and NB), reconcile NB fully, then
        serve."""
        started = time.monotonic()
        self._ensure_default_subnet()
        for kind in self.kinds:
            if kind.watch == KOPF:
                self.cache.replace_all(kind.name,
                                       [kind.slim(o) for o in self.state.kube.list(kind.path)])
        for watch in self.watches:
            watch.list()
        batch, everything = Batch(), Dirty()
        for kind in self.kinds:
            everything.of(kind.name).update(self.cache.snapshot(kind.name))
            if kind.sync_all:  # pools exist before the addresses they hold are restored
                kind.sync_all(self.state, batch, everything, True)
        for kind in self.kinds:
            if kind.restore:
                for key, obj in self.cache.snapshot(kind.name).items():
                    kind.restore(self.state, key, obj)
        for kind in self.kinds:
            if kind.restore_from_nb:
                kind.restore_from_nb(self.state, self._observe)
        self.cache.take_dirty(0)  # the full flush covers everything listed so far
        self._full_flush()
        counts = {kind.name: len(self.cache.snapshot(kind.name)) for kind in self.kinds}
        LOG.info("controller ready in %.1fs: %s", time.monotonic() - started, counts)
        self.ready.set()
        self._thread = threading.Thread(target=self._run, name="kovn-worker", daemon=True)
        self._thread.start()
        for watch in self.watches:
            watch.start(list_first=False)

    def _observe(self, owners: Collection[Owner]) -> list[NbRow]:
        return [observed.row for observed in self.reconciler.observe(owners)]

    def _ensure_default_subnet(self) -> None:
        config = self.state.config
        try:
            self.state.kube.call("GET", subnet_path(config.default_subnet))
        except KubeError as exc:
            if exc.status != 404:
                raise
            LOG.info("creating the default subnet %s (%s)", config.default_subnet,
                     config.default_cidr)
            try:
                self.state.kube.create(SUBNETS, topology.default_subnet_object(config))
            except KubeError as again:
                if again.status != 409:  # created by someone else meanwhile: fine
                    raise

    def stop(self) -> None:
        self._stop.set()
        for watch in self.watches:
            watch.stop()
        self.cache.wake()
        if self._thread:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self.last_tick = time.monotonic()
            if not self.may_write():  # the hold ran out: operators/main.py restarts us
                self._stop.wait(0.5)
                continue
            try:
                if time.monotonic() - self._last_full > self.resync:
                    self._full_flush()
                    continue
                dirty = self.cache.take_dirty(timeout=1.0)
                for owner in self.state.faults.due():
                    kind = self.by_owner_type.get(owner.type)
                    if kind is not None:
                        dirty.of(kind.name).add(owner.name)
                    elif owner == CLUSTER:
                        self._last_full = 0.0
                if dirty:
                    self.flush(dirty)
                for publish in self.state.burst.release():
                    self._pool.submit(self._publish, publish)
                if time.monotonic() - self._last_usage > 2.0:
                    self._last_usage = time.monotonic()
                    subnets.publish_statuses(self.state)
            except Exception:
                LOG.exception("flush failed; retrying with a full reconcile")
                self._last_full = 0.0
                time.sleep(1.0)

    def flush(self, dirty: Dirty, full: bool = False) -> None:
        started = time.monotonic()
        state, batch = self.state, Batch()
        metrics = self.metrics
        for kind in self.kinds:
            kind_started = time.monotonic()
            if kind.sync_all:
                try:
                    kind.sync_all(state, batch, dirty, full)
                except Exception:  # its rows stay as they were; the other kinds go on
                    LOG.exception("computing every %s failed; retrying with the next flush",
                                  kind.kind)
                    metrics.reconcile_error(kind.kind, "SyncFailed")
                    self._last_full = 0.0
            keys = dirty.get(kind.name, set())
            if kind.sync_one:
                for key in sorted(keys):
                    self._sync_guarded(kind, batch, key)
            if kind.after:
                kind.after(state, batch, dirty, keys)
            if keys or full:
                metrics.kind_reconciled(kind.kind, len(keys), time.monotonic() - kind_started)
        written = self._commit(batch, full)
        subnets.publish_statuses(state, usage=full)
        elapsed = time.monotonic() - started
        metrics.flushed(full, elapsed, written)
        elapsed_ms = elapsed * 1000
        LOG.log(logging.INFO if written or full or elapsed_ms > 100 else logging.DEBUG,
                "flush: %d objects (%s), %d owners written, %d API writes, %d set aside, "
                "in %.0f ms", dirty.total(), "full" if full else "incremental", written,
                len(batch.after_commit), len(state.faults), elapsed_ms)

    def _sync_guarded(self, kind: Kind, batch: Batch, key: str) -> None:
        assert kind.sync_one is not None
        try:
            kind.sync_one(self.state, batch, key)
        except Exception as exc:
            owner = Owner(str(kind.owner_type), key)
            LOG.debug("translating %s failed", owner, exc_info=True)
            batch.rows.pop(owner, None)
            self._set_aside(owner, batch, "TranslationFailed",
                            f"computing its OVN rows failed: {type(exc).__name__}: {exc}")

    def _set_aside(self, owner: Owner, batch: Batch, reason: str, message: str) -> None:
        """Keep the owner's old rows, drop what this flush would have published for it, tell
        its object, and retry later."""
        state = self.state
        batch.after_commit[:] = [p for p in batch.after_commit if self._owner_of(p) != owner]
        kind = self.by_owner_type.get(owner.type)
        self.metrics.reconcile_error(kind.kind if kind is not None else owner.type, reason)
        if kind is not None:
            state.written.pop((kind.name, owner.name), None)
            state.pod_memo.pop(owner.name, None)
        state.faults.failed(owner, message)
        obj = self.cache.get(kind.name, owner.name) \
            if kind is not None and kind.watch != DERIVED else None
        if obj is not None:
            state.report(f"owner:{owner}", obj, reason, f"{message} (retrying with backoff; "
                         "the rest of the cluster is unaffected)")

    def _owner_of(self, publish: Publish) -> Owner | None:
        for kind in self.kinds:
            if kind.name == publish.kind and kind.owner_type:
                return Owner(str(kind.owner_type), publish.key)
        return None

    def _publish(self, publish: Publish) -> None:
        try:
            publish.write()
        except Exception as exc:
            LOG.warning("writing %s %s failed (%s); retrying", publish.kind, publish.key, exc)
            self.metrics.api_write_failures.inc()
            if self.state.written.get((publish.kind, publish.key)) == publish.token:
                del self.state.written[(publish.kind, publish.key)]
            time.sleep(0.5)
            self.cache.mark(publish.kind, [publish.key])

    def _full_flush(self) -> None:
        self._last_full = time.monotonic()
        self.metrics.full_resyncs.inc()
        # Compare against the objects as watched, not what we believe we wrote: an
        # annotation removed by hand is written again.
        self.state.written.clear()
        dirty = Dirty()
        for kind in self.kinds:
            dirty.of(kind.name).update(self.cache.snapshot(kind.name))
        for owner in self.state.applied:
            kind = self.by_owner_type.get(owner.type)
            if kind is not None:
                dirty.of(kind.name).add(owner.name)
        self.flush(dirty, full=True)

    # --- writing ---------------------------------------------------------------------------
    def _rank(self, owner: Owner) -> tuple[int, str]:
        """Containers before their contents: the cluster, then kinds in table order."""
        if owner == CLUSTER:
            return (-1, owner.name)
        kind = self.by_owner_type.get(owner.type)
        return (self.kinds.index(kind) if kind is not None else len(self.kinds), owner.name)

    def _write_scoped(self, group: Rows) -> None:
        desired = [r for rows in group.values() for r in rows]
        self.reconciler.reconcile(desired, owners=set(group), what=f"{len(group)} owners")

    def _commit(self, batch: Batch, full: bool) -> int:
        """Write the batch; the number of owners whose rows changed."""
        state = self.state
        batch.rows[CLUSTER] = topology.cluster_rows(state.config)
        changed: Rows = {o: tuple(r) for o, r in batch.rows.items()
                         if full or state.applied.get(o) != tuple(r)}
        order = sorted(changed, key=self._rank)
        failed: dict[Owner, str] = {}
        if full:
            try:
                desired = [r for rows in {**state.applied, **changed}.values() for r in rows]
                # Owners whose translation failed have no rows in this batch: keep theirs.
                self.reconciler.reconcile(desired, what="full resync", spare={
                    o for o in state.faults.failures if o not in changed})
            except NorthboundUnavailable:
                raise
            except Exception as exc:
                LOG.warning("full resync refused (%s): writing owner by owner", exc)
                failed = write_isolated(self._write_scoped, changed, order)
                # The sweep: delete what no object explains, sparing the owners set aside
                # (their last rows stay as they were, even right after a restart).
                self.reconciler.reconcile(
                    [r for o, rows in changed.items() if o not in failed for r in rows],
                    what="full resync sweep", spare=set(failed) | set(state.faults.failures))
        elif changed:
            failed = write_isolated(self._write_scoped, changed, order)
        for owner, rows in changed.items():
            if owner in failed:
                continue
            if rows:
                state.applied[owner] = rows
            else:
                state.applied.pop(owner, None)
        for owner, message in failed.items():
            self._set_aside(owner, batch, "NorthboundRefused", f"OVN NB refused its rows: "
                            f"{message}")
        for owner in batch.rows:
            if owner not in failed and state.faults.succeeded(owner):
                state.resolved(f"owner:{owner}")
        # Published behind the worker: the next flush computes and commits while the API
        # server takes these. A failed write marks its object dirty, so it is retried.
        # Pod annotations wait while a burst of pods is starting (operators/burst.py).
        for publish in batch.after_commit:
            if state.burst.admit(publish):
                self._pool.submit(self._publish, publish)
        return len(changed) - len(failed)
