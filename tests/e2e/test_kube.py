"""The sandbox's real Kubernetes control plane: Nodes kept Ready by the heartbeat, the
scheduler binding pods, controller-manager controllers at work, the Subnet CRD served.

Everything is checked from outside, with kubectl and kovn's client (kube/client.py, raw
JSON; the sandbox uses the same one). They share the session's `kube_sandbox`; the slow test
(nodes stay Ready past the node lifecycle controller's 50 s grace period) runs at the end of
the session and only waits for what is left of that minute since the nodes registered.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kube.client import KubeClient, node_path
from sandbox import kube
from sandbox.cluster import Sandbox
from tests.e2e.conftest import CLI_PREFIX, why_no_kube

pytestmark = pytest.mark.e2e
needs_kube = pytest.mark.skipif(why_no_kube() is not None, reason=why_no_kube() or "")

REPO = Path(__file__).resolve().parents[2]
KUBECTL = kube.bin_dir() / "kubectl"
NS = "kvk-apps"
GRACE = 50  # kube-controller-manager --node-monitor-grace-period (default)
T = TypeVar("T")


@pytest.fixture(scope="module")
def api(kube_sandbox: Sandbox) -> Iterator[KubeClient]:
    api_client = KubeClient(kube_sandbox.kubeconfig)
    try:
        yield api_client
    finally:
        api_client.close()


def kubectl(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KUBECTL), "--kubeconfig", str(sandbox.kubeconfig), *args],
                          capture_output=True, text=True, timeout=30)


def eventually(check: Callable[[], T | None], what: str, timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.2)
    return result


def _ready(node: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in node["status"]["conditions"] if c["type"] == "Ready")


def _time(stamp: str) -> datetime.datetime:
    """A Kubernetes Time or MicroTime (RFC 3339, UTC)."""
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@needs_kube
def test_nodes_ready_with_underlay_ips(kube_sandbox: Sandbox) -> None:
    result = kubectl(kube_sandbox, "get", "nodes", "-o", "json")
    assert result.returncode == 0, result.stderr
    nodes = {n["metadata"]["name"]: n for n in json.loads(result.stdout)["items"]}
    assert sorted(nodes) == ["node1", "node2"]
    for sandbox_node in kube_sandbox.nodes:
        node = nodes[sandbox_node.name]
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"
        assert {"type": "InternalIP", "address": sandbox_node.underlay_ip} in \
            node["status"]["addresses"]
        assert not node["spec"].get("taints"), node["spec"]
        assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.3"
        assert node["status"]["allocatable"]["pods"] == "250"
    table = kubectl(kube_sandbox, "get", "nodes").stdout
    assert table.count(" Ready ") == 2, table


@needs_kube
def test_scheduler_binds_deployment_pods(kube_sandbox: Sandbox, api: KubeClient) -> None:
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": NS}})
    labels = {"app": "web"}
    api.create(f"/apis/apps/v1/namespaces/{NS}/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "web", "image": "registry.invalid/serve-hostname",
                                     "ports": [{"containerPort": 8080}]}]}}}})

    def bound() -> list[str] | None:
        pods = api.list(f"/api/v1/namespaces/{NS}/pods", selector="app=web")
        nodes = [p["spec"].get("nodeName") for p in pods]
        return nodes if len(nodes) == 2 and all(nodes) else None

    nodes = eventually(bound, "2 pods of Deployment web bound to nodes")
    assert set(nodes) <= {"node1", "node2"}


@needs_kube
def test_service_gets_an_endpointslice(kube_sandbox: Sandbox, api: KubeClient) -> None:
    svc = api.create(f"/api/v1/namespaces/{NS}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"},
                 "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
    assert svc["spec"]["clusterIP"].startswith("10.96.")
    slices = eventually(
        lambda: list(api.list(f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices",
                              selector="kubernetes.io/service-name=web")),
        "an EndpointSlice for Service web")
    # Its pods have no IPs (no kubelet yet), so the slice has no endpoints; it exists and
    # belongs to the Service, which is the endpointslice controller's part.
    owner = slices[0]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == \
        ("Service", "web", svc["metadata"]["uid"])


@needs_kube
def test_namespace_deletion_completes(kube_sandbox: Sandbox, api: KubeClient) -> None:
    """The namespace controller empties it; the heartbeat confirms its bound pods' deletion."""
    api.create(f"/api/v1/namespaces/{NS}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
        "data": {"a": "b"}})
    api.delete(f"/api/v1/namespaces/{NS}", missing_ok=False)
    eventually(lambda: api.get_or_none(f"/api/v1/namespaces/{NS}") is None,
               f"namespace {NS} deleted (with its 2 bound pods)", timeout=60)


@needs_kube
def test_subnet_crd_established(kube_sandbox: Sandbox, api: KubeClient) -> None:
    crd = api.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/subnets.kovn.io")
    assert any(c["type"] == "Established" and c["status"] == "True"
               for c in crd["status"]["conditions"])
    subnet = {"apiVersion": "kovn.io/v1", "kind": "Subnet", "metadata": {"name": "kvk-blue"},
              "spec": {"cidrBlock": "10.17.0.0/16"}}
    api.create("/apis/kovn.io/v1/subnets", subnet)
    try:
        table = kubectl(kube_sandbox, "get", "subnets")
        assert table.returncode == 0, table.stderr
        assert "kvk-blue" in table.stdout and "10.17.0.0/16" in table.stdout
    finally:
        api.delete("/apis/kovn.io/v1/subnets/kvk-blue")


@needs_kube
def test_status_prints_kubeconfig(kube_sandbox: Sandbox) -> None:
    argv = [sys.executable, "-m", "cli.main", "sandbox", "status", "--state-dir",
            str(kube_sandbox.state_dir)]
    status = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert status.returncode == 0, status.stderr
    assert f"export KUBECONFIG={kube_sandbox.kubeconfig}" in status.stdout
    for daemon in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                   "heartbeat"):
        assert any(line.split()[:2] == [daemon, "running"]
                   for line in status.stdout.splitlines()), status.stdout


@needs_kube
def test_port_in_use_is_a_clean_error(kube_sandbox: Sandbox, tmp_path: Path) -> None:
    port = str(kube_sandbox.config.apiserver_port)
    argv = [sys.executable, "-m", "cli.main", "sandbox", "up", "--state-dir",
            str(tmp_path / "state"), "--prefix", CLI_PREFIX, "--nb-tcp-port", "none",
            "--apiserver-port", port]
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.startswith(f"kovn: 127.0.0.1:{port} (kube-apiserver) is in use")
    assert "--apiserver-port" in result.stderr
    assert not (tmp_path / "state").exists()


def test_missing_binaries_is_a_clean_error(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "cli.main", "sandbox", "up", "--state-dir",
            str(tmp_path / "state"), "--prefix", CLI_PREFIX]
    env = {**os.environ, kube.BIN_ENV: str(tmp_path / "no-bin")}
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"kovn: Kubernetes binaries missing in {tmp_path / 'no-bin'}: run sandbox/k8s/build.sh "
        "(~10 min cold)"), result.stderr
    assert "--no-kube" in result.stderr
    assert not (tmp_path / "state").exists()


@needs_kube
@pytest.mark.run_last
def test_nodes_stay_ready_past_the_grace_period(kube_sandbox: Sandbox,
                                                api: KubeClient) -> None:
    """Slow (up to ~1 min after `up`): by then the lifecycle controller would have marked nodes
    without heartbeats NotReady and tainted them. The API server's clock is this machine's."""
    registered = max(_time(api.get(node_path(n.name))["metadata"]["creationTimestamp"])
                     for n in kube_sandbox.nodes)
    left = registered.timestamp() + GRACE + 8 - time.time()
    if left > 0:
        time.sleep(left)
    now = datetime.datetime.now(datetime.UTC)
    for sandbox_node in kube_sandbox.nodes:
        node = api.get(node_path(sandbox_node.name))
        created = _time(node["metadata"]["creationTimestamp"])
        ready = _ready(node)
        assert ready["status"] == "True", ready
        assert not node["spec"].get("taints"), node["spec"]
        assert not node["spec"].get("unschedulable")
        # no flap
        assert _time(ready["lastTransitionTime"]) <= created + datetime.timedelta(seconds=1)
        assert _time(ready["lastHeartbeatTime"]) >= created + datetime.timedelta(seconds=30)
        lease = api.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/"
                        f"{sandbox_node.name}")
        renewed = _time(lease["spec"]["renewTime"])
        assert renewed >= created + datetime.timedelta(seconds=40)
        assert now - renewed < datetime.timedelta(seconds=15)
