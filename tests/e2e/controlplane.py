"""Helpers for tests against the sandbox's real Kubernetes API and a real `kovn controller`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from controller.podnetwork import POD_NETWORK, PodNetwork
from operators.kubeapi import KubeAPI, KubeError, pod_path

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]


def eventually(probe: Callable[[], T | None], timeout: float = 30.0, what: str = "",
               interval: float = 0.2) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(interval)


class ControllerProcess:
    """`kovn controller` as a subprocess, as it runs in the sandbox: killable and restartable."""

    def __init__(self, nb_remote: str, kubeconfig: Path, log: Path, resync: float = 5.0) -> None:
        self.argv = [sys.executable, "-m", "cli.main", "controller", "--nb", nb_remote,
                     "--kubeconfig", str(kubeconfig), "--resync", str(resync)]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0

    def start(self) -> None:
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=REPO, stdout=out, stderr=out)

    def wait_ready(self, timeout: float = 60) -> None:
        eventually(lambda: b"controller ready" in self.log.read_bytes()[self._offset:]
                   or self._died(),
                   timeout, f"controller ready (see {self.log})")
        assert self.proc is not None and self.proc.poll() is None, \
            f"controller exited: see {self.log}"

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def kill(self) -> None:
        """SIGKILL: no cleanup handlers run, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def pod_manifest(namespace: str, name: str, annotations: dict[str, str] | None = None,
                 labels: dict[str, str] | None = None, host_network: bool = False
                 ) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "kovn.io/serve-hostname",
                                            "ports": [{"containerPort": 8080}]}],
                            "terminationGracePeriodSeconds": 0}
    if host_network:
        spec["hostNetwork"] = True
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace,
                         "annotations": annotations or {}, "labels": labels or {}},
            "spec": spec}


class Cluster:
    """Test-side access to the API server (raw JSON, like the controller)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.api = KubeAPI(str(kubeconfig))

    def namespace(self, name: str, annotations: dict[str, str] | None = None) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "annotations": annotations or {}}}
        try:
            self.api.create("/api/v1/namespaces", body)
        except KubeError as exc:
            if exc.status != 409:
                raise

    def create_pod(self, manifest: dict[str, Any]) -> dict[str, Any]:
        ns = manifest["metadata"]["namespace"]
        return self.api.create(f"/api/v1/namespaces/{ns}/pods", manifest)

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


def nb_ports(nb_remote: str) -> dict[str, dict[str, Any]]:
    """Every Logical_Switch_Port by name, read with ovn-nbctl (independent of kovn's code)."""
    out = subprocess.run(
        ["ovn-nbctl", f"--db={nb_remote}", "--format=json", "--columns=name,addresses,options,"
         "external_ids", "list", "Logical_Switch_Port"],
        capture_output=True, text=True, check=True).stdout
    table = json.loads(out)
    ports = {}
    for row in table["data"]:
        record = dict(zip(table["headings"], row, strict=True))
        addresses = record["addresses"]
        record["addresses"] = addresses[1] if addresses[0] == "set" else [addresses]
        record["options"] = dict(record["options"][1])
        record["external_ids"] = dict(record["external_ids"][1])
        ports[record["name"]] = record
    return ports


def iter_chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
