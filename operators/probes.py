"""The controller's /healthz and /readyz, and the one object that serves them with /metrics.

Liveness (/healthz): 200 while the worker thread lives and its loop comes round (it does at
least every second when idle, once per flush when busy); 503 with the reason when the
thread died or a flush has been stuck for WORKER_STUCK_AFTER seconds, so the kubelet
restarts the controller. While starting (listing, the first full reconcile), and as a
standby, the process is alive by definition.

Readiness (/readyz): 200 once the controller finished its start-up (the worker's `ready`
event), or while it is a standby: a standby is ready to take over, not broken, and a
Deployment whose standbys were never Ready would never finish rolling out.

    telemetry = ControllerTelemetry.serve("0.0.0.0:9476")   # or "off"
    controller = Controller(..., metrics=telemetry.metrics)
    telemetry.attach(controller)
    telemetry.set_leader(True)        # the leader election, on every change

`set_leader(None)` means no leader election (the controller is the one writer).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from operators.metrics import ControllerMetrics
from telemetry.address import parse_address
from telemetry.server import TelemetryServer, process_registry

if TYPE_CHECKING:
    from operators.worker import Controller

LOG = logging.getLogger(__name__)
WORKER_STUCK_AFTER = 180.0
"""Seconds without a turn of the worker's loop before /healthz fails: far above the longest
full flush measured (10,000 pods), far below "nobody noticed for an hour"."""


class ControllerProbes:
    def __init__(self, stuck_after: float = WORKER_STUCK_AFTER) -> None:
        self.stuck_after = stuck_after
        self.controller: Controller | None = None
        self.leader: bool | None = None
        """None: no leader election; False: a standby (alive and ready without a worker)."""

    def liveness(self) -> str | None:
        controller = self.controller
        if controller is None or self.leader is False:
            return None
        return controller.worker_problem(self.stuck_after)

    def readiness(self) -> str | None:
        if self.leader is False:
            return "ok: standby (another controller holds the leader Lease)"
        controller = self.controller
        if controller is None:
            return "starting: connecting to OVN NB and the API server"
        if not controller.ready.is_set():
            return "starting: listing objects and the first full reconcile"
        return controller.worker_problem(self.stuck_after)


class ControllerTelemetry:
    """The controller's metrics, probes and (unless `off`) their HTTP server."""

    def __init__(self, metrics: ControllerMetrics, probes: ControllerProbes,
                 server: TelemetryServer | None) -> None:
        self.metrics = metrics
        self.probes = probes
        self.server = server

    @classmethod
    def serve(cls, address: str, stuck_after: float = WORKER_STUCK_AFTER
              ) -> ControllerTelemetry:
        """Start serving on `address` (`HOST:PORT` or `off`); TelemetryError (saying what to
        do) if it is malformed or taken."""
        metrics = ControllerMetrics(process_registry())
        probes = ControllerProbes(stuck_after)
        where = parse_address(address)
        server = None
        if where is not None:
            server = TelemetryServer(where, metrics.registry, probes.liveness,
                                     probes.readiness, what="kovn controller").start()
        return cls(metrics, probes, server)

    def attach(self, controller: Controller) -> None:
        """The controller whose worker the probes watch (its metrics are ours)."""
        self.probes.controller = controller

    def set_leader(self, leader: bool | None) -> None:
        """The leader election's hook: True while this controller holds the Lease, False as a
        standby, None without leader election (the controller is then the leader)."""
        self.probes.leader = leader
        self.metrics.leader.set(0 if leader is False else 1)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
