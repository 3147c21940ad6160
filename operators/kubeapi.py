"""A thin, raw-JSON client for the few Kubernetes API calls the operator makes itself.

kopf does the watching. Lists at start, annotation patches, status patches and Events go
through here, as plain dicts: the generated models of the `kubernetes` package cost about a
millisecond per pod to deserialize, which is seconds at 10,000 pods.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

import kubernetes

LOG = logging.getLogger(__name__)
COMPONENT = "kovn-controller"


class KubeError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeAPI:
    def __init__(self, kubeconfig: str | None = None, pool_size: int = 24) -> None:
        config = kubernetes.client.Configuration()
        path = kubeconfig or os.environ.get("KUBECONFIG")
        if path:
            kubernetes.config.load_kube_config(config_file=path, client_configuration=config)
        else:
            kubernetes.config.load_incluster_config(client_configuration=config)
        config.connection_pool_maxsize = pool_size
        self.client = kubernetes.client.ApiClient(config)

    def call(self, method: str, path: str, body: Any = None,
             content_type: str = "application/json", query: Mapping[str, Any] | None = None
             ) -> dict[str, Any]:
        """One request; the decoded JSON answer, or KubeError with the API server's message."""
        _, url, headers, payload, _ = self.client.param_serialize(
            method, path, query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body, auth_settings=["BearerToken"],
        )
        try:
            response = self.client.call_api(method, url, headers, payload, _request_timeout=30)
        except kubernetes.client.ApiException as exc:
            raise KubeError(exc.status or 0, _reason(exc.body)) from exc
        data = response.read()
        if not 200 <= response.status < 300:
            raise KubeError(response.status, _reason(data))
        return json.loads(data) if data else {}

    def list(self, path: str, page: int = 2000, selector: str = "") -> Iterator[dict[str, Any]]:
        """Every item of a collection (optionally with a label selector), paged."""
        items, _ = self.list_versioned(path, page, selector)
        return iter(items)

    def list_versioned(self, path: str, page: int = 2000, selector: str = ""
                       ) -> tuple[list[dict[str, Any]], str]:
        """All items and the list's resourceVersion (where a watch resumes)."""
        base: dict[str, Any] = {"limit": page}
        if selector:
            base["labelSelector"] = selector
        query, items = dict(base), []
        while True:
            result = self.call("GET", path, query=query)
            items.extend(result.get("items", []))
            meta = result.get("metadata", {})
            if not meta.get("continue"):
                return items, meta.get("resourceVersion", "")
            query = {**base, "continue": meta["continue"]}

    def watch(self, path: str, resource_version: str, timeout: int = 300
              ) -> Iterator[dict[str, Any]]:
        """Watch events (dicts with type/object) from `resource_version`, until the server
        ends the stream (after `timeout` seconds) or the connection breaks."""
        query = {"watch": "1", "resourceVersion": resource_version,
                 "allowWatchBookmarks": "true", "timeoutSeconds": timeout}
        _, url, headers, _, _ = self.client.param_serialize(
            "GET", path, query_params=list(query.items()),
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        response = self.client.call_api("GET", url, headers,
                                        _request_timeout=(10, timeout + 30))
        if response.status != 200:
            raise KubeError(response.status, _reason(response.read()))
        raw = response.response
        buffer = b""
        try:
            for chunk in raw.stream(1 << 16):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            raw.release_conn()

    def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("PATCH", path, body, "application/merge-patch+json")

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", path, body)

    def event(self, obj: Mapping[str, Any], reason: str, message: str,
              kind: str = "Warning") -> None:
        """A core/v1 Event about `obj`; failures are logged, never raised (best effort)."""
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        stamp = now_rfc3339()
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'kovn')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind", ""),
                "name": meta.get("name", ""), "namespace": meta.get("namespace", ""),
                "uid": meta.get("uid", ""), "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason, "message": message, "type": kind,
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }
        try:
            self.create(f"/api/v1/namespaces/{namespace}/events", body)
        except KubeError as exc:
            LOG.warning("could not post event %s on %s: %s", reason, meta.get("name"), exc)


def _reason(body: Any) -> str:
    try:
        return json.loads(body).get("message", str(body))
    except (TypeError, ValueError):
        return str(body)


def pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


def node_path(name: str) -> str:
    return f"/api/v1/nodes/{name}"


SUBNETS = "/apis/kovn.io/v1/subnets"


def subnet_path(name: str) -> str:
    return f"{SUBNETS}/{name}"
