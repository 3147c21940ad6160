"""Leader election through a `coordination.k8s.io/v1` Lease: one NB writer at a time.

Two controllers writing one NB undo each other's rows (measured: every full resync of a
stale second controller deleted 20 rows of an idle 6-pod cluster and cut 6-16 of its 36
pod-to-pod paths). So the controller stands by until it holds the Lease, and writes only
while its hold is fresh.

The rules are client-go's (k8s.io/client-go/tools/leaderelection), which every Kubernetes
controller follows, so kovn behaves as operators expect:
- A standby judges expiry by its own clock: the Lease's record must stay unchanged for
  `duration` seconds from when *this* process first saw it, never by comparing the
  record's renewTime with the local clock (clocks of two machines differ).
- Writes to the Lease are optimistic (its resourceVersion): of two standbys racing for an
  expired Lease, the API server lets exactly one win.
- The leader renews every `retry` seconds; it may write only within `renew_deadline` of its
  last successful renewal. That deadline is shorter than `duration`, so a leader cut off
  from the API server (or paused, or whose credentials were revoked) has stopped writing
  before any standby can take over: the fence is a clock comparison (`may_write`), so it
  holds even if the renewing thread itself is stuck.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from contract.defaults import LEADER_LEASE, SYSTEM_NAMESPACE
from kube.client import KubeClient, KubeError

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseTiming:
    """Seconds. duration > renew_deadline > retry, as client-go requires: the gap between
    renew_deadline and duration is the margin between "the leader stops writing" and "a
    standby may start"; a standby takes over at most duration + retry after the leader's
    last renewal."""

    duration: float = 10.0
    renew_deadline: float = 7.0
    retry: float = 2.0

    def __post_init__(self) -> None:
        if not self.duration > self.renew_deadline > self.retry > 0:
            raise ValueError(f"lease timing needs duration > renew deadline > retry > 0, got "
                             f"{self.duration} / {self.renew_deadline} / {self.retry}")


def default_identity() -> str:
    """$POD_NAME in a pod (a restarted container of the same pod resumes its own Lease at
    once), else host and pid: two controllers started by hand never share one."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}"


def default_namespace() -> str:
    return os.environ.get("POD_NAMESPACE") or SYSTEM_NAMESPACE


def micro_time(when: dt.datetime | None = None) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds)."""
    return (when or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_path(namespace: str, name: str = "") -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return f"{base}/{name}" if name else base


class LeaderElector:
    """Acquire, renew and release one Lease; `may_write()` is the fence for every write."""

    def __init__(self, api: KubeClient, identity: str, namespace: str = SYSTEM_NAMESPACE,
                 name: str = LEADER_LEASE, timing: LeaseTiming = LeaseTiming(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api, self.identity, self.timing, self.clock = api, identity, timing, clock
        self.namespace, self.name = namespace, name
        self.where = f"Lease {namespace}/{name}"
        self._renewed_at: float | None = None  # our last successful acquire/renew
        self._observed: tuple[Any, ...] | None = None  # the record as last seen
        self._observed_at = 0.0  # when it was first seen as it is
        self._last_said = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the fence -------------------------------------------------------------------------
    def may_write(self) -> bool:
        """True while this process leads and its last renewal is within the renew
        deadline; every NB transaction and API write of the controller asks first."""
        renewed = self._renewed_at
        return renewed is not None and self.clock() - renewed < self.timing.renew_deadline

    @property
    def leading(self) -> bool:
        return self._renewed_at is not None

    # --- acquiring -------------------------------------------------------------------------
    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Block until this process holds the Lease (True) or `stop` is set (False),
        saying why it stands by whenever that changes."""
        stop = stop or self._stop
        while not stop.is_set():
            if self.try_acquire_or_renew():
                LOG.info("leading: %s acquired by %s", self.where, self.identity)
                return True
            stop.wait(self.timing.retry)
        return False

    def try_acquire_or_renew(self) -> bool:
        """One round of client-go's tryAcquireOrRenew; True when we hold the Lease now."""
        try:
            lease = self.api.get_or_none(lease_path(self.namespace, self.name))
            if lease is None:
                return self._create()
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            now = self.clock()
            record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"),
                      lease["metadata"].get("resourceVersion"))
            if record != self._observed:
                self._observed, self._observed_at = record, now
            duration = float(spec.get("leaseDurationSeconds") or self.timing.duration)
            if holder and holder != self.identity and now - self._observed_at < duration:
                self._say(f"standing by: {self.where} is held by {holder}; taking over if "
                          f"it is not renewed for {duration:.0f} s")
                self._renewed_at = None
                return False
            return self._update(lease, holder)
        except KubeError as exc:
            self._say(f"cannot read or write {self.where}: {exc}{self._hint(exc)}; retrying")
            return False

    def _create(self) -> bool:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(acquired=True, transitions=0)}
        started = self.clock()
        try:
            self.api.create(lease_path(self.namespace), body)
        except KubeError as exc:
            if exc.status == 409:  # another candidate created it first: judge it next round
                return False
            raise
        self._renewed_at = started
        return True

    def _update(self, lease: dict[str, Any], holder: str) -> bool:
        spec = lease.get("spec") or {}
        ours = holder == self.identity
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        new_spec = {**spec, **self._spec(acquired=not ours, transitions=transitions)}
        started = self.clock()  # the deadline counts from before the request, never after
        try:
            self.api.put(lease_path(self.namespace, self.name),
                         {**lease, "spec": new_spec})
        except KubeError as exc:
            if exc.status == 409:  # someone else wrote it meanwhile: not ours this round
                self._renewed_at = None
                return False
            raise
        if not ours:
            LOG.info("%s: took over from %s", self.where, holder or "nobody (released)")
        self._renewed_at = started
        return True

    def _spec(self, acquired: bool, transitions: int) -> dict[str, Any]:
        now = micro_time()
        spec: dict[str, Any] = {"holderIdentity": self.identity, "renewTime": now,
                                "leaseDurationSeconds": max(1, round(self.timing.duration)),
                                "leaseTransitions": transitions}
        if acquired:
            spec["acquireTime"] = now
        return spec

    # --- renewing --------------------------------------------------------------------------
    def keep_renewing(self, on_lost: Callable[[str], None]) -> None:
        """Renew every `retry` seconds in a thread; once the hold is past the renew deadline
        (or someone else holds the Lease), call `on_lost(reason)` once and stop."""
        def loop() -> None:
            while not self._stop.wait(self.timing.retry):
                renewed = self.try_acquire_or_renew()
                if not renewed and self._renewed_at is None:
                    holder = self._observed[0] if self._observed else "someone else"
                    on_lost(f"{self.where} is now held by {holder}")
                    return
                if not self.may_write():
                    self._renewed_at = None
                    on_lost(f"{self.where} not renewed for {self.timing.renew_deadline:.0f} s "
                            "(the API server unreachable, or this controller's credentials "
                            "no longer allow it)")
                    return

        self._thread = threading.Thread(target=loop, name="kovn-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """On a clean stop: hand the Lease over at once instead of letting it expire (as
        client-go's ReleaseOnCancel)."""
        self._stop.set()
        if not self.may_write():
            return
        self._renewed_at = None
        try:
            lease = self.api.get(lease_path(self.namespace, self.name))
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"] = {**lease["spec"], "holderIdentity": None,
                             "leaseDurationSeconds": 1, "renewTime": micro_time()}
            self.api.put(lease_path(self.namespace, self.name), lease)
            LOG.info("released %s", self.where)
        except KubeError as exc:
            LOG.warning("could not release %s (%s); it expires by itself", self.where, exc)

    # --- saying so -------------------------------------------------------------------------
    def _say(self, message: str) -> None:
        if message != self._last_said:  # once per change, not every retry
            self._last_said = message
            LOG.log(logging.WARNING if "cannot" in message else logging.INFO, message)

    def _hint(self, exc: KubeError) -> str:
        if exc.status == 404:
            return (f" (namespace {self.namespace} missing? apply manifests/ with "
                    "`kubectl apply -k manifests/`, or pass --lease-namespace)")
        if exc.status == 403:
            return (" (this controller's identity may not use Leases there: see the Role in "
                    "manifests/)")
        return ""
