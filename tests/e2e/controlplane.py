"""Helpers for tests against the sandbox's real Kubernetes API and a real `kovn controller`
(the controller process, pod manifests, nb_ports and eventually are in sandbox.controlplane,
which the benchmarks share)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from contract.podnetwork import POD_NETWORK, PodNetwork
from kube.client import KubeClient, KubeError, pod_path

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]


class Cluster:
    """Test-side access to the API server (raw JSON, like the controller)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.api = KubeClient(kubeconfig)

    def namespace(self, name: str, annotations: dict[str, str] | None = None) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "annotations": annotations or {}}}
        try:
            self.api.create("/api/v1/namespaces", body)
        except KubeError as exc:
            if exc.status != 409:
                raise

    def create_or_get(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create the object, or return the one of that name a first attempt of the same
        test created (tests/e2e/conftest.py runs a test again after a vswitchd crash)."""
        try:
            return self.api.create(collection, body)
        except KubeError as exc:
            if exc.status != 409:
                raise
            return self.api.get(f"{collection}/{body['metadata']['name']}")

    def create_service(self, namespace: str, name: str, app: str, tcp_target: int | str,
                       udp_target: int | str, **spec: Any) -> dict[str, Any]:
        """A Service of the pods labelled app=`app` on TCP and UDP port 80 (ports named
        tcp and udp), with `spec` on top."""
        body = {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"selector": {"app": app},
                         "ports": [{"name": "tcp", "port": 80, "targetPort": tcp_target},
                                   {"name": "udp", "port": 80, "targetPort": udp_target,
                                    "protocol": "UDP"}], **spec}}
        return self.create_or_get(f"/api/v1/namespaces/{namespace}/services", body)

    def create_pod(self, manifest: dict[str, Any]) -> dict[str, Any]:
        ns = manifest["metadata"]["namespace"]
        return self.create_or_get(f"/api/v1/namespaces/{ns}/pods", manifest)

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.api.call("GET", pod_path(namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def pods(self, namespace: str | None = None, selector: str = "") -> list[dict[str, Any]]:
        path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
        query = {"labelSelector": selector} if selector else None
        return self.api.call("GET", path, query=query).get("items", [])

    def delete_pod(self, namespace: str, name: str) -> None:
        try:
            self.api.call("DELETE", pod_path(namespace, name), {"gracePeriodSeconds": 0})
        except KubeError as exc:
            if exc.status != 404:
                raise

    def network(self, namespace: str, name: str) -> PodNetwork | None:
        pod = self.pod(namespace, name)
        text = (pod or {}).get("metadata", {}).get("annotations", {}).get(POD_NETWORK)
        return PodNetwork.decode(text) if text else None

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        items = self.api.call("GET", f"/api/v1/namespaces/{namespace}/events").get("items", [])
        return [e for e in items if e["involvedObject"].get("name") == name]

    def subnet(self, name: str) -> dict[str, Any] | None:
        try:
            return self.api.call("GET", f"/apis/kovn.io/v1/subnets/{name}")
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def apply_subnet(self, name: str, spec: dict[str, Any]) -> None:
        body = {"apiVersion": "kovn.io/v1", "kind": "Subnet", "metadata": {"name": name},
                "spec": spec}
        try:
            self.api.create("/apis/kovn.io/v1/subnets", body)
        except KubeError as exc:
            if exc.status != 409:
                raise
            self.api.merge_patch(f"/apis/kovn.io/v1/subnets/{name}", {"spec": spec})

    def delete_subnet(self, name: str) -> None:
        try:
            self.api.call("DELETE", f"/apis/kovn.io/v1/subnets/{name}")
        except KubeError as exc:
            if exc.status != 404:
                raise


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions", []):
        if cond.get("type") == kind:
            return cond
    return {}


def iter_chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
