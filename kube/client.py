"""The one Kubernetes API client of kovn: raw JSON requests, lists, watches and Events.

The controller, the node agent, the sandbox and the benchmarks all use this class. It rides
on the `kubernetes` package only for what that does well, reading every kubeconfig form
(files, inline data, tokens, exec plugins) and in-cluster service accounts, and its pooled
urllib3 connections; it never builds the generated models, which cost about a millisecond
per pod to deserialize (seconds at 10,000 pods). Answers are plain dicts.

`api_netns` names a network namespace to reach the API server from: in the sandbox the node
agent runs in a node's netns, which cannot reach the machine's loopback. A small pool of
threads enters that netns once and every request runs on them, so every connection the
client opens is made there, while the caller stays where it is.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import quote

import kubernetes

LOG = logging.getLogger(__name__)
T = TypeVar("T")
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


class KubeError(RuntimeError):
    """The API server answered with an error status; status 0: it could not be reached.

    `method` and `path` name the request (empty when not known), for messages to users."""

    def __init__(self, status: int, message: str, method: str = "", path: str = "") -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.reason = message
        self.method = method
        self.path = path

    @property
    def request(self) -> str:
        """`METHOD /path` of the failed request ("" when not known)."""
        return f"{self.method} {self.path}".strip()


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_config(kubeconfig: str | os.PathLike[str] | None) -> kubernetes.client.Configuration:
    """The client configuration of a kubeconfig ($KUBECONFIG when None), else in-cluster."""
    config = kubernetes.client.Configuration()
    path = str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG")
    try:
        if path:
            kubernetes.config.load_kube_config(config_file=path, client_configuration=config)
        else:
            kubernetes.config.load_incluster_config(client_configuration=config)
    except Exception as exc:  # ConfigException, OSError, YAML errors
        raise KubeError(0, f"cannot load the kubeconfig {path or '(in-cluster)'}: {exc}: "
                        "pass --kubeconfig or set $KUBECONFIG") from exc
    return config


class KubeClient:
    """`timeout`: seconds per request (each call may pass its own). `unreachable_hint` is
    appended to the message when the API server cannot be reached (e.g. which option to
    pass); `api_netns` + `enter_netns`: run every request from that netns (see above)."""

    def __init__(self, kubeconfig: str | os.PathLike[str] | None = None, pool_size: int = 24,
                 timeout: float = 30.0, api_netns: str | None = None,
                 enter_netns: Callable[[str], None] | None = None,
                 unreachable_hint: str = "") -> None:
        config = load_config(kubeconfig)
        config.connection_pool_maxsize = pool_size
        self.server = config.host
        self.timeout = timeout
        self.unreachable_hint = unreachable_hint
        self.client = kubernetes.client.ApiClient(config)
        self.api_netns = api_netns
        self._pool: ThreadPoolExecutor | None = None
        if api_netns:
            if enter_netns is None:
                raise ValueError("api_netns needs enter_netns (a function entering a netns)")
            self._pool = ThreadPoolExecutor(pool_size, thread_name_prefix="kovn-kube",
                                            initializer=enter_netns, initargs=(api_netns,))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            return fn(*args)
        return self._pool.submit(fn, *args).result()

    # --- requests ----------------------------------------------------------------------------
    def call(self, method: str, path: str, body: Any = None, content_type: str = JSON,
             query: Mapping[str, Any] | None = None, timeout: float | None = None) -> Any:
        """One request; the decoded JSON answer (text when not JSON), or KubeError with the
        API server's message (status 0 when it cannot be reached).

        `body`: an object (sent as JSON; YAML content types take JSON too), or text / bytes
        sent as they are (e.g. YAML for APPLY_PATCH). `timeout`: this request's, in seconds."""
        return self._run(self._call, method, path, body, content_type, query,
                         self.timeout if timeout is None else timeout)

    request = call

    def _call(self, method: str, path: str, body: Any, content_type: str,
              query: Mapping[str, Any] | None, timeout: float) -> Any:
        if isinstance(body, str | bytes) and "json" in content_type:
            body = json.loads(body)  # the REST layer would encode the text as a JSON string
        elif body is not None and "yaml" in content_type and not isinstance(body, str | bytes):
            body = json.dumps(body)  # JSON is YAML; older REST layers send only text as YAML
        _, url, headers, payload, _ = self.client.param_serialize(
            method, path, query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": JSON},
            body=body, auth_settings=["BearerToken"])
        try:
            response = self.client.call_api(method, url, headers, payload,
                                            _request_timeout=timeout)
        except kubernetes.client.ApiException as exc:
            raise KubeError(exc.status or 0, _reason(exc.body), method, path) from exc
        except Exception as exc:  # urllib3's connection errors: the server is unreachable
            raise self._unreachable(method, path, exc) from exc
        data = response.read()
        if not 200 <= response.status < 300:
            raise KubeError(response.status, _reason(data), method, path)
        if not data:
            return {}
        try:
            return json.loads(data)
        except ValueError:
            return data.decode(errors="replace")

    def _unreachable(self, method: str, path: str, exc: Exception) -> KubeError:
        where = f" from netns {self.api_netns}" if self.api_netns else ""
        hint = f" ({self.unreachable_hint})" if self.unreachable_hint else ""
        return KubeError(0, f"cannot reach the API server at {self.server}{where}{hint}: "
                         f"{exc}", method, path)

    def get(self, path: str, query: Mapping[str, Any] | None = None) -> Any:
        return self.call("GET", path, query=query)

    def get_or_none(self, path: str) -> Any:
        """GET, or None for 404."""
        try:
            return self.get(path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.call("POST", path, body)

    def put(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.call("PUT", path, body)

    def patch(self, path: str, body: Any, content_type: str = MERGE_PATCH) -> Any:
        """PATCH with any patch type (MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH...)."""
        return self.call("PATCH", path, body, content_type)

    def merge_patch(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.call("PATCH", path, body, MERGE_PATCH)

    def apply(self, path: str, body: Any, field_manager: str, force: bool = True) -> Any:
        """Server-side apply of one object (a dict, or its YAML/JSON text) at its own path."""
        query = {"fieldManager": field_manager, **({"force": "true"} if force else {})}
        return self.call("PATCH", path, body, APPLY_PATCH, query)

    def delete(self, path: str, missing_ok: bool = True, body: Any = None) -> Any:
        """DELETE (`body`: DeleteOptions, e.g. a grace period or preconditions); None for
        404 when `missing_ok`."""
        try:
            return self.call("DELETE", path, body)
        except KubeError as exc:
            if exc.status == 404 and missing_ok:
                return None
            raise

    # --- collections -------------------------------------------------------------------------
    def list(self, path: str, page: int = 2000, selector: str = "",
             fields: str = "") -> Iterator[dict[str, Any]]:
        """Every item of a collection (optionally selected by labels or fields), paged."""
        items, _ = self.list_versioned(path, page, selector, fields)
        return iter(items)

    def list_versioned(self, path: str, page: int = 2000, selector: str = "",
                       fields: str = "") -> tuple[list[dict[str, Any]], str]:
        """All items and the list's resourceVersion (where a watch resumes)."""
        base: dict[str, Any] = {"limit": page}
        if selector:
            base["labelSelector"] = selector
        if fields:
            base["fieldSelector"] = fields
        query, items = dict(base), []
        while True:
            result = self.get(path, query)
            items.extend(result.get("items", []))
            meta = result.get("metadata", {})
            if not meta.get("continue"):
                return items, meta.get("resourceVersion", "")
            query = {**base, "continue": meta["continue"]}

    def watch(self, path: str, resource_version: str, timeout: int = 300,
              selector: str = "", fields: str = "") -> Iterator[dict[str, Any]]:
        """Watch events (dicts with type/object) from `resource_version`, with bookmarks,
        until the server ends the stream (after `timeout` seconds) or the connection breaks.
        The stream is read on the caller's thread; with `api_netns` it is opened there."""
        query: dict[str, Any] = {"watch": "1", "resourceVersion": resource_version,
                                 "allowWatchBookmarks": "true", "timeoutSeconds": timeout}
        if selector:
            query["labelSelector"] = selector
        if fields:
            query["fieldSelector"] = fields
        response = self._run(self._open_watch, path, query, timeout)
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

    def _open_watch(self, path: str, query: dict[str, Any], timeout: int) -> Any:
        _, url, headers, _, _ = self.client.param_serialize(
            "GET", path, query_params=list(query.items()),
            header_params={"Accept": JSON}, auth_settings=["BearerToken"])
        try:
            response = self.client.call_api("GET", url, headers,
                                            _request_timeout=(10, timeout + 30))
        except kubernetes.client.ApiException as exc:
            raise KubeError(exc.status or 0, _reason(exc.body), "GET", path) from exc
        except Exception as exc:
            raise self._unreachable("GET", path, exc) from exc
        if response.status != 200:
            raise KubeError(response.status, _reason(response.read()), "GET", path)
        return response

    # --- events ------------------------------------------------------------------------------
    def event(self, obj: Mapping[str, Any], reason: str, message: str,
              kind: str = "Warning", component: str = "kovn-controller",
              host: str = "") -> None:
        """A core/v1 Event about `obj` (`kind`: Warning or Normal; `host`: the node of the
        reporting component, as a kubelet says); failures are logged, never raised."""
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        stamp = now_rfc3339()
        body: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'kovn')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind", ""),
                "name": meta.get("name", ""), "namespace": meta.get("namespace", ""),
                "uid": meta.get("uid", ""), "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason, "message": message, "type": kind,
            "source": {"component": component}, "reportingComponent": component,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }
        if host:
            body["source"]["host"] = body["reportingInstance"] = host
        try:
            self.create(f"/api/v1/namespaces/{quote(namespace)}/events", body)
        except KubeError as exc:
            LOG.warning("could not post event %s on %s: %s", reason, meta.get("name"), exc)


def _reason(body: Any) -> str:
    try:
        return str(json.loads(body).get("message", body))
    except (TypeError, ValueError, AttributeError):
        return body.decode(errors="replace") if isinstance(body, bytes) else str(body)


def annotations(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})


def pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}"


def node_path(name: str) -> str:
    return f"/api/v1/nodes/{quote(name)}"
