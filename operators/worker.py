"""The controller's worker: start-up recovery, batched flushes, periodic full reconcile.

One thread owns IPAM and NB writes. Each flush takes every dirty key, computes the rows of
those objects, writes them in ONE NB transaction scoped to their owners, and then publishes
annotations (in parallel, the API server being the slow part). A full reconcile (at start and
every `resync` seconds) rebuilds every row from the cache and lets the reconciler delete
whatever kovn owns that no object explains: ports of pods deleted while it was down, drift.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from controller import topology
from controller.config import ClusterConfig
from controller.ipam import IPAMError
from northbound.reconciler import Reconciler
from northbound.rows import CLUSTER, NbRow, Owner
from operators import nodes, pods, subnets
from operators.cache import KINDS, ClusterCache, Dirty
from operators.kubeapi import SUBNETS, KubeAPI, KubeError, subnet_path
from operators.podwatch import PodWatch
from operators.state import Batch, Publish, State, slim

LOG = logging.getLogger(__name__)
LISTS = (
    ("subnets", "Subnet", "kovn.io/v1", SUBNETS),
    ("namespaces", "Namespace", "v1", "/api/v1/namespaces"),
    ("nodes", "Node", "v1", "/api/v1/nodes"),
)


class Controller:
    def __init__(self, config: ClusterConfig, kube: KubeAPI, reconciler: Reconciler,
                 resync: float = 60.0, publishers: int = 16) -> None:
        self.state = State(config=config, kube=kube, cache=ClusterCache())
        self.reconciler = reconciler
        self.resync = resync
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(publishers, thread_name_prefix="kovn-publish")
        self._thread: threading.Thread | None = None
        self.pod_watch = PodWatch(kube, self.state.cache)
        self._last_full = 0.0
        self._last_usage = 0.0

    @property
    def cache(self) -> ClusterCache:
        return self.state.cache

    # --- start -----------------------------------------------------------------------------
    def start(self) -> None:
        """List everything, rebuild IPAM from annotations, reconcile NB fully, then serve."""
        started = time.monotonic()
        self._ensure_default_subnet()
        for kind, kind_name, api_version, path in LISTS:
            objs = [slim(kind_name, api_version, o) for o in self.state.kube.list(path)]
            self.cache.replace_all(kind, objs)
        self.pod_watch.list_all()
        batch = Batch()
        subnets.sync_subnets(self.state, batch)
        nodes.ensure_join_pool(self.state)
        for name, obj in self.cache.snapshot("nodes").items():
            previous = nodes.recorded(obj)
            if previous:
                try:
                    self.state.ipam.pool("join").restore(name, previous.address)
                except IPAMError as exc:  # the node gets a fresh address in its sync
                    LOG.warning("node %s: %s", name, exc)
        for key, obj in self.cache.snapshot("pods").items():
            pods.restore(self.state, key, obj)
        self._full_flush()
        counts = {kind: len(self.cache.snapshot(kind)) for kind in KINDS}
        LOG.info("controller ready in %.1fs: %s", time.monotonic() - started, counts)
        self.ready.set()
        self._thread = threading.Thread(target=self._run, name="kovn-worker", daemon=True)
        self._thread.start()
        self.pod_watch.start()

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
        self.pod_watch.stop()
        self.cache.wake()
        if self._thread:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if time.monotonic() - self._last_full > self.resync:
                    self._full_flush()
                    continue
                dirty = self.cache.take_dirty(timeout=1.0)
                if dirty:
                    self.flush(dirty)
                if time.monotonic() - self._last_usage > 2.0:
                    self._last_usage = time.monotonic()
                    subnets.refresh_usage(self.state)
            except Exception:
                LOG.exception("flush failed; retrying with a full reconcile")
                self._last_full = 0.0
                time.sleep(1.0)

    def flush(self, dirty: Dirty, full: bool = False) -> None:
        started = time.monotonic()
        state, batch = self.state, Batch()
        subnet_change = bool(dirty.subnets or dirty.namespaces or full)
        if subnet_change and subnets.sync_subnets(state, batch):
            state.pod_memo.clear()  # pools may have moved under the pods
            dirty.nodes.update(self.cache.snapshot("nodes"))  # their routes list the subnets
            dirty.pods.update(state.waiting)
        elif subnet_change:
            dirty.pods.update(state.waiting)
        for name in sorted(dirty.nodes):
            nodes.sync_node(state, batch, name)
        released = False
        for key in sorted(dirty.pods):
            held = state.ipam.lookup(key)
            pods.sync_pod(state, batch, key)
            released |= held is not None and state.ipam.lookup(key) is None
        if released and state.waiting:
            self.cache.mark("pods", set(state.waiting) - dirty.pods)
        written = self._commit(batch, full)
        elapsed_ms = (time.monotonic() - started) * 1000
        LOG.log(logging.INFO if written or full or elapsed_ms > 100 else logging.DEBUG,
                "flush: %d objects (%s), %d owners written, %d API writes in %.0f ms",
                dirty.total(), "full" if full else "incremental", written,
                len(batch.after_commit), elapsed_ms)

    def _publish(self, publish: Publish) -> None:
        try:
            publish.write()
        except Exception as exc:
            LOG.warning("writing %s %s failed (%s); retrying", publish.kind, publish.key, exc)
            if self.state.written.get((publish.kind, publish.key)) == publish.token:
                del self.state.written[(publish.kind, publish.key)]
            time.sleep(0.5)
            self.cache.mark(publish.kind, [publish.key])

    def _full_flush(self) -> None:
        self._last_full = time.monotonic()
        # Compare against the objects as watched, not what we believe we wrote: an
        # annotation removed by hand is written again.
        self.state.written.clear()
        dirty = Dirty(set(self.cache.snapshot("subnets")), set(self.cache.snapshot("namespaces")),
                      set(self.cache.snapshot("nodes")), set(self.cache.snapshot("pods")))
        dirty.pods |= {o.name for o in self.state.applied if o.type == "Pod"}
        dirty.nodes |= {o.name for o in self.state.applied if o.type == "Node"}
        self.flush(dirty, full=True)

    def _commit(self, batch: Batch, full: bool) -> int:
        """Write the batch; the number of owners whose rows changed."""
        state = self.state
        batch.rows[CLUSTER] = topology.cluster_rows(state.config)
        changed = {o: tuple(r) for o, r in batch.rows.items()
                   if full or state.applied.get(o) != tuple(r)}
        if full:
            desired: list[NbRow] = [r for rows in {**state.applied, **changed}.values()
                                    for r in rows]
            self.reconciler.reconcile(desired, what="full resync")
        elif changed:
            desired = [r for rows in changed.values() for r in rows]
            owners: set[Owner] = set(changed)
            self.reconciler.reconcile(desired, owners=owners, what=f"{len(owners)} owners")
        for owner, rows in changed.items():
            if rows:
                state.applied[owner] = rows
            else:
                state.applied.pop(owner, None)
        # Published behind the worker: the next flush computes and commits while the API
        # server takes these. A failed write marks its object dirty, so it is retried.
        for publish in batch.after_commit:
            self._pool.submit(self._publish, publish)
        return len(changed)
