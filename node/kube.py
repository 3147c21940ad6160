"""The few Kubernetes API reads the node agent makes: its Node, a pod, the pods on the node.

Raw JSON through the `kubernetes` package's ApiClient (its config loading handles every
kubeconfig form), no generated models.

The agent runs in the node's host netns. In the sandbox that netns cannot reach the API
server on the machine's loopback, so `api_netns` names a netns to talk to the API from: a
small pool of threads enters it once, and every request runs on those threads, so every
connection the client opens is created there. Everything else the agent does stays in the
node's netns.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import kubernetes

from node.plumbing import NetnsMissing, enter_netns, open_netns

LOG = logging.getLogger(__name__)


class KubeError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


class NodeKube:
    def __init__(self, kubeconfig: str | None, api_netns: str | None = None,
                 workers: int = 8, timeout: float = 15.0) -> None:
        config = kubernetes.client.Configuration()
        try:
            if kubeconfig:
                kubernetes.config.load_kube_config(config_file=kubeconfig,
                                                   client_configuration=config)
            else:
                kubernetes.config.load_incluster_config(client_configuration=config)
        except Exception as exc:  # ConfigException, OSError, YAML errors
            raise KubeError(0, f"cannot load the kubeconfig {kubeconfig or '(in-cluster)'}: "
                            f"{exc}") from exc
        config.connection_pool_maxsize = workers
        self.server = config.host
        self.timeout = timeout
        self.client = kubernetes.client.ApiClient(config)
        self.api_netns = api_netns
        if api_netns:
            try:
                os.close(open_netns(api_netns))
            except (NetnsMissing, OSError) as exc:
                raise KubeError(0, f"--kube-netns {api_netns}: {exc}") from exc
        self._pool = (ThreadPoolExecutor(workers, thread_name_prefix="kovn-kube",
                                         initializer=enter_netns, initargs=(api_netns,))
                      if api_netns else None)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def call(self, method: str, path: str, query: dict[str, Any] | None = None) -> Any:
        """One request; the decoded JSON, KubeError (status 0: the server is unreachable)."""
        if self._pool is None:
            return self._call(method, path, query)
        return self._pool.submit(self._call, method, path, query).result()

    def _call(self, method: str, path: str, query: dict[str, Any] | None) -> Any:
        _, url, headers, body, _ = self.client.param_serialize(
            method, path, query_params=list((query or {}).items()),
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        try:
            response = self.client.call_api(method, url, headers, body,
                                            _request_timeout=self.timeout)
        except kubernetes.client.ApiException as exc:
            raise KubeError(exc.status or 0, _reason(exc.body)) from exc
        except Exception as exc:  # urllib3's connection errors: the server is unreachable
            where = (f" from netns {self.api_netns}" if self.api_netns else
                     " (if only another netns reaches it, pass --kube-netns)")
            raise KubeError(0, f"cannot reach the API server at {self.server}{where}: "
                            f"{exc}") from exc
        data = response.read()
        if not 200 <= response.status < 300:
            raise KubeError(response.status, _reason(data))
        return json.loads(data) if data else {}

    def get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return self.call("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get_or_none(f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}")

    def node(self, name: str) -> dict[str, Any] | None:
        return self.get_or_none(f"/api/v1/nodes/{quote(name)}")

    def pods_on_node(self, node: str) -> list[dict[str, Any]]:
        result = self.call("GET", "/api/v1/pods",
                           {"fieldSelector": f"spec.nodeName={node}"})
        return list(result.get("items", []))


def _reason(body: Any) -> str:
    try:
        return str(json.loads(body).get("message", body))
    except (TypeError, ValueError, AttributeError):
        return str(body)


def annotations(obj: dict[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})
