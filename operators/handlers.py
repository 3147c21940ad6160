"""kopf registrations: watch events go into the cache; the worker does the rest.

Raw watch events (`on.event`) rather than kopf's create/update/delete handlers: those store
per-object progress in annotations and add finalizers, which would double the API writes per
pod, and an operator outage must never block pod deletion. Level-triggered recovery comes
from the start-up listing and the periodic full reconcile instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import kopf

from operators.kinds import KOPF, Kind
from operators.worker import Controller

LOG = logging.getLogger(__name__)
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The pod's ServiceAccount, at the API server client-go would use.

    kopf's own service-account login always dials https://kubernetes.default.svc: a name
    only cluster DNS resolves, to a ClusterIP only a working pod network serves. The
    controller runs on the host network and *is* the pod network (and replaces kube-proxy),
    so, like client-go's InClusterConfig and kube/client.py, it takes the server from
    $KUBERNETES_SERVICE_HOST/PORT (the manifests set them to the real API server). The
    token is read at every login: kopf logs in again on 401, so a rotated projected token
    is picked up."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    token_file = SERVICE_ACCOUNT / "token"
    if not host or not token_file.exists():
        return kopf.login_with_service_account(**kwargs)
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    ca = SERVICE_ACCOUNT / "ca.crt"
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return kopf.ConnectionInfo(server=server, ca_path=str(ca) if ca.exists() else None,
                               token=token_file.read_text().strip() or None,
                               default_namespace=None)


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf computes a deep-copied "essence" of every object on every event to diff it for
    change handlers, even when, as here, only raw event handlers exist: that was 60% of the
    controller's CPU at 2,000 pods. With no change handlers there is nothing to diff."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


def register(registry: kopf.OperatorRegistry, controller: Controller) -> None:
    """Wire `controller` into a kopf registry."""

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # kopf's own log-events would flood the API
        settings.persistence.diffbase_storage = NoDiffBase()
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 60
        await asyncio.get_running_loop().run_in_executor(None, controller.start)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # kopf's kubeconfig reader, not its `kubernetes`-client login: the latter does not
        # cope with the client's v3x API.
        return kopf.login_with_kubeconfig(**kwargs) or in_cluster_login(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        controller.stop()

    for kind in controller.kinds:
        if kind.watch == KOPF:
            _watch(registry, controller, kind)


def _watch(registry: kopf.OperatorRegistry, controller: Controller, kind: Kind) -> None:
    group, version = kind.group_version
    plural = kind.path.rsplit("/", 1)[-1]

    @kopf.on.event(group, version, plural, registry=registry)
    async def on_event(event: dict[str, Any], **_: Any) -> None:
        obj = kind.slim(event["object"])
        if event.get("type") == "DELETED":
            controller.cache.forget(kind.name, obj)
        else:
            controller.cache.store(kind.name, obj)
