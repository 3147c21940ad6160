"""Run the kovn controller: connect to NB and the Kubernetes API, then let kopf watch."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field

import kopf

from controller.config import ClusterConfig
from kube.client import KubeClient
from northbound.connection import NbConnection
from operators import handlers
from operators.fence import FencedKube, FencedReconciler
from operators.leader import LeaderElector, LeaseTiming, default_identity, default_namespace
from operators.probes import ControllerTelemetry
from operators.worker import Controller

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Election:
    """Leader election settings; `enabled=False` only for a controller known to be alone."""

    enabled: bool = True
    identity: str = field(default_factory=default_identity)
    namespace: str = field(default_factory=default_namespace)
    timing: LeaseTiming = field(default_factory=LeaseTiming)


def run(nb_remote: str, kubeconfig: str | None, config: ClusterConfig, resync: float,
        election: Election | None = None, metrics_address: str = "off") -> int:
    """Blocks until SIGTERM/SIGINT; returns the exit code.

    KOVN_PROFILE=<file> profiles every thread with yappi (if installed) and writes the
    functions by total time to <file> at exit: the way to see where a flush goes."""
    profile = os.environ.get("KOVN_PROFILE")
    if profile:
        import yappi

        yappi.set_clock_type("cpu")
        yappi.start()
        try:
            return _run(nb_remote, kubeconfig, config, resync, election or Election(),
                        metrics_address)
        finally:
            yappi.stop()
            with open(profile, "w") as out:
                stats = yappi.get_func_stats()
                stats.sort("tsub")
                for f in list(stats)[:80]:
                    out.write(f"{f.tsub:9.3f} {f.ttot:9.3f} {f.ncall:9d} "
                              f"{f.module.split('site-packages/')[-1]}:{f.lineno} {f.name}\n")
    return _run(nb_remote, kubeconfig, config, resync, election or Election(),
                metrics_address)


def _run(nb_remote: str, kubeconfig: str | None, config: ClusterConfig, resync: float,
         election: Election, metrics_address: str) -> int:
    # The NB connection thread does many short socket waits; while kopf's event loop is
    # busy, each wait for the GIL costs up to the switch interval (5 ms by default): a
    # two-row transaction took a second under a burst of pod events (the "convoy effect").
    sys.setswitchinterval(0.0005)
    # kopf logs every handled event at INFO: millions of lines at 10,000 pods.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's login reads it too
    # Served first, so /healthz answers while NB and the API server are being reached, and
    # a standby is alive and ready (ready to take over).
    telemetry = ControllerTelemetry.serve(metrics_address)
    telemetry.set_leader(False if election.enabled else None)
    with contextlib.closing(telemetry), NbConnection(nb_remote) as nb:
        LOG.info("kovn controller: NB %s, kubeconfig %s", nb_remote, kubeconfig or "in-cluster")
        elector = None
        if election.enabled:
            # Its own client with short timeouts: a renewal must never wait behind the
            # controller's lists, nor hang past the renew deadline.
            lease_api = KubeClient(kubeconfig, pool_size=2, timeout=election.timing.retry)
            elector = LeaderElector(lease_api, election.identity, election.namespace,
                                    timing=election.timing)
            elector.acquire()
            telemetry.set_leader(True)

            def lost(reason: str) -> None:
                telemetry.set_leader(False)
                restart_as_standby(reason)

            elector.keep_renewing(on_lost=lost)
        may_write = elector.may_write if elector else _always
        controller = Controller(config, FencedKube(kubeconfig, may_write),
                                FencedReconciler(nb, may_write), resync=resync,
                                metrics=telemetry.metrics, may_write=may_write)
        telemetry.attach(controller)
        registry = kopf.OperatorRegistry()
        handlers.register(registry, controller)
        try:
            kopf.run(registry=registry, standalone=True, clusterwide=True)
        finally:
            if elector is not None:
                elector.release()
    return 0


def _always() -> bool:
    return True


def restart_as_standby(reason: str) -> None:
    """The hold is lost: writes are already fenced off (may_write is False). Start over as a
    fresh process, as client-go controllers do: its cache, IPAM and memos were built
    while leading, and another leader may have changed the cluster since; a new process
    lists everything again once it leads. Same pid and arguments, so a supervisor (the
    sandbox, a container runtime) sees one process that stood down."""
    LOG.error("lost leadership: %s; stopped writing NB and the API; restarting to stand by",
              reason)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)
