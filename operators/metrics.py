"""The controller's Prometheus metrics (served by operators/probes.py on --metrics-address).

Two sorts, chosen for the worker's sake (it handles thousands of pods per flush):
- events counted where they happen, at most a few per flush and per kind, never per object:
  reconciles, their duration and errors per kind, flushes, full resyncs, NB transactions
  (duration, rows changed) and failed API writes;
- gauges computed from the controller's state when Prometheus scrapes (a collector that
  reads it, so nothing is kept up to date on the hot paths): owners set aside, pods waiting
  for an address, pod annotations held during a burst, IPAM usage per Subnet, cached
  objects per kind, owners with rows in NB,
  the last full resync.

The worker is the only writer of that state; the collector only reads sizes and copies of
dicts (atomic under the GIL), retrying the rare copy that meets a resize.

Each ControllerMetrics has its own registry: a process serves one, tests make as many as
they like. `kovn_controller_leader` is set by the leader election (operators/probes.py
ControllerTelemetry.set_leader).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from northbound.plan import Plan
from operators.state import JOIN_POOL

if TYPE_CHECKING:
    from operators.worker import Controller

T = TypeVar("T")
SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ROWS = (0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000)


class _KindSeries:
    """One kind's children, resolved once: labels() costs a lock and a dict lookup."""

    def __init__(self, metrics: ControllerMetrics, kind: str) -> None:
        self.reconciles = metrics.reconciles.labels(kind)
        self.duration = metrics.reconcile_duration.labels(kind)
        self.objects = metrics.reconciled_objects.labels(kind)


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        self.reconciles = Counter(
            "kovn_controller_reconciles_total", "Flushes in which a kind had objects to "
            "reconcile (every kind in a full resync)", ["kind"], registry=registry)
        self.reconcile_duration = Histogram(
            "kovn_controller_reconcile_duration_seconds", "Time a flush spent computing one "
            "kind's rows (its NB write is kovn_nb_transaction_duration_seconds)", ["kind"],
            buckets=SECONDS, registry=registry)
        self.reconciled_objects = Counter(
            "kovn_controller_reconciled_objects_total", "Objects reconciled, per kind",
            ["kind"], registry=registry)
        self.reconcile_errors = Counter(
            "kovn_controller_reconcile_errors_total", "Owners set aside (TranslationFailed, "
            "NorthboundRefused) and kinds whose whole computation failed (SyncFailed)",
            ["kind", "reason"], registry=registry)
        self.flush_duration = Histogram(
            "kovn_controller_flush_duration_seconds", "Whole flushes: compute, NB commit, "
            "Subnet statuses", ["mode"], buckets=SECONDS, registry=registry)
        self.full_resyncs = Counter(
            "kovn_controller_full_resyncs_total", "Full reconciles (start, --resync period, "
            "after a failed flush)", registry=registry)
        self.owners_written = Counter(
            "kovn_controller_owners_written_total", "Owners whose NB rows a flush changed",
            registry=registry)
        self.api_write_failures = Counter(
            "kovn_controller_api_write_failures_total", "Annotation and status writes that "
            "failed and were retried", registry=registry)
        self.nb_duration = Histogram(
            "kovn_nb_transaction_duration_seconds", "NB reconcile transactions: observe, "
            "plan and commit (scope full: the whole of kovn's rows; owners: a flush's)",
            ["scope"], buckets=SECONDS, registry=registry)
        self.nb_rows = Histogram(
            "kovn_nb_transaction_rows", "Rows created, updated or deleted per NB transaction",
            ["scope"], buckets=ROWS, registry=registry)
        self.nb_operations = Counter(
            "kovn_nb_row_operations_total", "Rows written to NB", ["op"], registry=registry)
        self.nb_errors = Counter(
            "kovn_nb_transaction_errors_total", "NB transactions refused or failed",
            ["scope"], registry=registry)
        self.leader = Gauge(
            "kovn_controller_leader", "1 while this controller holds the leader Lease and "
            "writes NB (0: standby)", registry=registry)
        self._ops = {op: self.nb_operations.labels(op) for op in ("create", "update", "delete")}
        self._kinds: dict[str, _KindSeries] = {}
        self.state = _StateCollector()
        registry.register(self.state)

    def watch(self, controller: Controller) -> None:
        """Compute the state gauges from `controller` at each scrape."""
        self.state.controller = controller

    # --- counted where it happens (a few calls per flush) ------------------------------------
    def kind_reconciled(self, kind: str, objects: int, seconds: float) -> None:
        series = self._kinds.get(kind)
        if series is None:
            series = self._kinds[kind] = _KindSeries(self, kind)
        series.reconciles.inc()
        series.duration.observe(seconds)
        if objects:
            series.objects.inc(objects)

    def reconcile_error(self, kind: str, reason: str) -> None:
        self.reconcile_errors.labels(kind, reason).inc()

    def flushed(self, full: bool, seconds: float, owners_written: int) -> None:
        self.flush_duration.labels("full" if full else "incremental").observe(seconds)
        if owners_written:
            self.owners_written.inc(owners_written)

    def nb_transaction(self, plan: Plan | None, seconds: float, full: bool) -> None:
        """Reconciler.on_transaction: `plan` None when the transaction failed."""
        scope = "full" if full else "owners"
        self.nb_duration.labels(scope).observe(seconds)
        if plan is None:
            self.nb_errors.labels(scope).inc()
            return
        created, updated, deleted = len(plan.creates), len(plan.updates), len(plan.deletes)
        self.nb_rows.labels(scope).observe(created + updated + deleted)
        for op, count in (("create", created), ("update", updated), ("delete", deleted)):
            if count:
                self._ops[op].inc(count)


def _settled(read: Callable[[], T], default: T) -> T:
    """`read()` of a dict the worker may be resizing right now: retried, else `default`."""
    for _ in range(5):
        try:
            return read()
        except RuntimeError:  # "dictionary changed size during iteration"
            continue
    return default


class _StateCollector(Collector):
    """Gauges read from the controller's state when scraped."""

    def __init__(self) -> None:
        self.controller: Controller | None = None

    def describe(self) -> list[Any]:
        return []  # names are not known before the first scrape; nothing to check

    def collect(self) -> Iterator[GaugeMetricFamily]:
        controller = self.controller
        if controller is None:
            return
        state = controller.state
        waiting = GaugeMetricFamily("kovn_controller_pods_waiting_for_address", "Pods without "
                                    "an address: their Subnet is not ready or exhausted, or "
                                    "their annotations are invalid (Events say which)")
        waiting.add_metric([], len(state.waiting))
        yield waiting
        held = GaugeMetricFamily("kovn_controller_pod_annotations_held", "Pod annotations "
                                 "held while a burst of pods is starting (operators/burst.py)")
        held.add_metric([], len(state.burst.held))
        yield held
        aside = GaugeMetricFamily("kovn_controller_owners_set_aside", "Owners whose rows could "
                                  "not be computed or written, retried with backoff",
                                  labels=["owner_type"])
        failed = _settled(lambda: list(state.faults.failures), [])
        for owner_type, count in sorted(collections.Counter(o.type for o in failed).items()):
            aside.add_metric([owner_type], count)
        yield aside
        used = GaugeMetricFamily("kovn_subnet_ips_used", "Addresses of the Subnet held by "
                                 "pods", labels=["subnet"])
        available = GaugeMetricFamily("kovn_subnet_ips_available", "Addresses of the Subnet "
                                      "still free (excluded ranges and the gateway not "
                                      "counted)", labels=["subnet"])
        for name, pool in sorted(_settled(lambda: list(state.ipam.pools.items()), [])):
            if name != JOIN_POOL:
                used.add_metric([name], pool.used)
                available.add_metric([name], pool.available)
        yield used
        yield available
        cached = GaugeMetricFamily("kovn_controller_cached_objects", "Objects in the "
                                   "controller's cache, per kind", labels=["kind"])
        for kind in controller.kinds:
            cached.add_metric([kind.kind], len(state.cache.objects.get(kind.name, ())))
        yield cached
        applied = GaugeMetricFamily("kovn_controller_owners_applied", "Owners (objects) whose "
                                    "rows the controller wrote to NB")
        applied.add_metric([], len(state.applied))
        yield applied
        last = controller.last_full_resync
        if last:
            stamp = GaugeMetricFamily("kovn_controller_last_full_resync_timestamp_seconds",
                                      "When the last full reconcile started (Unix time)")
            stamp.add_metric([], time.time() - (time.monotonic() - last))
            yield stamp
