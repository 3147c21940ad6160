"""Pod annotations yield to pods starting: under a burst they wait until it is over.

On a busy control plane the API server is the slowest part of a pod's start (bench.pod_ready:
100 pods at once on 2 cores saturate it). Each pod needs four writes from Kubernetes itself
(create, binding, Event, status) and one from kovn: the `kovn.io/pod-network` annotation,
a PATCH that every pod watcher then receives. The node agent does not need it to plumb the
pod (it reads the same network from the southbound Port_Binding first); the annotation is
the record users and tools read, and the agent's fallback. So while a burst of pods is
starting, their annotations are held and sent once no pod is starting any more, or after
`longest` seconds, whichever comes first. With 100 pods at once this took 0.6-1.0 s off
creation -> Ready p99 (the PATCHes and their watch fan-out no longer compete with binding
and status writes).

A pod is starting from when it is bound to a node until the kubelet reports its podIP (the
network is attached then). Only recent ones count: a pod that never starts (a node gone, a
CNI failing, a control plane without kubelets) stops holding anything after `longest` seconds
and is not counted again until it starts or goes: stuck pods seen anew at every resync must
not make a burst of their own every `longest` seconds (CI saw 215 stuck pods do that). A burst
begins when `threshold` pods are starting at once; a few pods at a time are annotated at once,
as before.

Nothing is lost by holding: the port is in NB before the annotation is even queued, and a
restarted controller re-takes the address NB records for a pod without annotation
(operators/pods.py restore_from_nb), then publishes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from operators.state import Publish

LOG = logging.getLogger(__name__)
THRESHOLD = 8
"""Pods starting at once that make a burst."""
LONGEST = 10.0
"""Seconds an annotation may be held (and a pod counts as starting)."""


def starting(obj: dict[str, Any] | None) -> bool:
    """Bound to a node, not host-network, not finished, and no podIP yet."""
    if obj is None:
        return False
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return bool(spec.get("nodeName")) and not spec.get("hostNetwork") and \
        not status.get("podIP") and status.get("phase") in (None, "", "Pending")


class Burst:
    """Which pods are starting, and the pod annotations held meanwhile.

    Used by the controller's worker thread only (no lock)."""

    def __init__(self, threshold: int = THRESHOLD, longest: float = LONGEST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold, self.longest, self.clock = threshold, longest, clock
        self.starting: dict[str, float] = {}
        """Pod key -> when it was first seen starting (kept while it is, so a stuck pod seen
        again at a resync keeps its age and never counts again)."""
        self.held: dict[str, tuple[float, Publish]] = {}
        """Pod key -> (held since, its latest annotation write)."""
        self.active = False

    def observe(self, key: str, obj: dict[str, Any] | None) -> None:
        if starting(obj):
            self.starting.setdefault(key, self.clock())
        else:
            self.starting.pop(key, None)

    def recent(self) -> int:
        """Pods starting for less than `longest` seconds (older ones are stuck: not counted)."""
        now = self.clock()
        return sum(1 for since in self.starting.values() if now - since < self.longest)

    def _update(self) -> None:
        count = self.recent()
        if not self.active and count >= self.threshold:
            self.active = True
            LOG.info("burst: %d pods starting; their kovn.io/pod-network annotations wait "
                     "until it is over (at most %.0fs)", count, self.longest)
        elif self.active and count == 0:
            self.active = False
            LOG.info("burst over: publishing %d held pod annotations", len(self.held))

    def admit(self, publish: Publish) -> bool:
        """True: write it now. False: held (release() hands it back later)."""
        if publish.kind != "pods":
            return True
        self._update()
        if not self.active and publish.key not in self.held:
            return True
        # Held behind an older write of the same pod: replaced, never overtaken by it.
        since = self.held[publish.key][0] if publish.key in self.held else self.clock()
        self.held[publish.key] = (since, publish)
        return False

    def release(self) -> list[Publish]:
        """The held writes that are due: all once the burst is over, else the oldest."""
        self._update()
        if not self.held:
            return []
        now = self.clock()
        due = [key for key, (since, _p) in self.held.items()
               if not self.active or now - since >= self.longest]
        return [self.held.pop(key)[1] for key in due]

    def forget(self, key: str) -> None:
        """The pod is gone: nothing of it to hold or count."""
        self.starting.pop(key, None)
        self.held.pop(key, None)
