"""Run the kovn controller: connect to NB and the Kubernetes API, then let kopf watch."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import kopf

from controller.config import ClusterConfig
from northbound.connection import NbConnection
from northbound.reconciler import Reconciler
from operators import handlers
from operators.kubeapi import KubeAPI
from operators.probes import ControllerTelemetry
from operators.worker import Controller

LOG = logging.getLogger(__name__)


def run(nb_remote: str, kubeconfig: str | None, config: ClusterConfig, resync: float,
        metrics_address: str = "off") -> int:
    """Blocks until SIGTERM/SIGINT; returns the exit code.

    KOVN_PROFILE=<file> profiles every thread with yappi (if installed) and writes the
    functions by total time to <file> at exit: the way to see where a flush goes."""
    profile = os.environ.get("KOVN_PROFILE")
    if profile:
        import yappi

        yappi.set_clock_type("cpu")
        yappi.start()
        try:
            return _run(nb_remote, kubeconfig, config, resync, metrics_address)
        finally:
            yappi.stop()
            with open(profile, "w") as out:
                stats = yappi.get_func_stats()
                stats.sort("tsub")
                for f in list(stats)[:80]:
                    out.write(f"{f.tsub:9.3f} {f.ttot:9.3f} {f.ncall:9d} "
                              f"{f.module.split('site-packages/')[-1]}:{f.lineno} {f.name}\n")
    return _run(nb_remote, kubeconfig, config, resync, metrics_address)


def _run(nb_remote: str, kubeconfig: str | None, config: ClusterConfig, resync: float,
         metrics_address: str) -> int:
    # The NB connection thread does many short socket waits; while kopf's event loop is
    # busy, each wait for the GIL costs up to the switch interval (5 ms by default): a
    # two-row transaction took a second under a burst of pod events (the "convoy effect").
    sys.setswitchinterval(0.0005)
    # kopf logs every handled event at INFO: millions of lines at 10,000 pods.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's login reads it too
    # Served first, so /healthz answers while NB and the API server are being reached.
    telemetry = ControllerTelemetry.serve(metrics_address)
    telemetry.set_leader(None)  # no leader election yet: the one writer
    with contextlib.closing(telemetry), NbConnection(nb_remote) as nb:
        controller = Controller(config, KubeAPI(kubeconfig), Reconciler(nb), resync=resync,
                                metrics=telemetry.metrics)
        telemetry.attach(controller)
        registry = kopf.OperatorRegistry()
        handlers.register(registry, controller)
        LOG.info("kovn controller: NB %s, kubeconfig %s", nb_remote, kubeconfig or "in-cluster")
        kopf.run(registry=registry, standalone=True, clusterwide=True)
    return 0
