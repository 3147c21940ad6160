"""Run the kovn controller: connect to NB and the Kubernetes API, then let kopf watch."""

from __future__ import annotations

import logging
import os

import kopf

from controller.config import ClusterConfig
from northbound.connection import NbConnection
from northbound.reconciler import Reconciler
from operators import handlers
from operators.kubeapi import KubeAPI
from operators.worker import Controller

LOG = logging.getLogger(__name__)


def run(nb_remote: str, kubeconfig: str | None, config: ClusterConfig, resync: float) -> int:
    """Blocks until SIGTERM/SIGINT; returns the exit code."""
    # kopf logs every handled event at INFO: millions of lines at 10,000 pods.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's login reads it too
    with NbConnection(nb_remote) as nb:
        controller = Controller(config, KubeAPI(kubeconfig), Reconciler(nb), resync=resync)
        registry = kopf.OperatorRegistry()
        handlers.register(registry, controller)
        LOG.info("kovn controller: NB %s, kubeconfig %s", nb_remote, kubeconfig or "in-cluster")
        kopf.run(registry=registry, standalone=True, clusterwide=True)
    return 0
