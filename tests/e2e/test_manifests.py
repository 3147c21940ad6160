"""manifests/ against a real API server: `kubectl apply -k manifests/` is accepted and creates
every object, and the rights it grants are tight, checked by the API server itself
(SubjectAccessReview) and by real requests with the ServiceAccounts' tokens.

Runs on the session's kube_sandbox: its nodes run no pods (a heartbeat keeps them Ready), so
the workloads the manifests create stay Pending and disturb nothing; they are deleted after
the module (the identities stay: the sandbox's own controller and agents use them).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kube.client import KubeClient, KubeError, node_path, pod_path
from sandbox import identities, kube
from sandbox.cluster import Sandbox
from sandbox.controlplane import eventually, pod_manifest

pytestmark = pytest.mark.e2e

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
NS = "t-manifests"
WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet", "Service", "ConfigMap")
POLICY = "kovn-annotations-only"


def kubectl(sandbox: Sandbox, *args: str, kubeconfig: Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig or sandbox.kubeconfig)}
    return subprocess.run([str(kube.bin_dir() / "kubectl"), *args], env=env, timeout=timeout,
                          capture_output=True, text=True, check=False)


def rendered(sandbox: Sandbox) -> list[dict[str, Any]]:
    out = kubectl(sandbox, "kustomize", str(MANIFESTS))
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def admin(kube_sandbox: Sandbox) -> Iterator[KubeClient]:
    api = KubeClient(kube_sandbox.kubeconfig)
    yield api
    api.close()


@pytest.fixture(scope="module")
def applied(kube_sandbox: Sandbox, admin: KubeClient) -> Iterator[list[dict[str, Any]]]:
    """`kubectl apply -k manifests/`; afterwards its workloads are deleted again."""
    objects = rendered(kube_sandbox)
    result = kubectl(kube_sandbox, "apply", "-k", str(MANIFESTS))
    assert result.returncode == 0, result.stderr
    try:
        yield objects
    finally:
        for obj in objects:
            if obj["kind"] in WORKLOADS:
                kubectl(kube_sandbox, "delete", "--wait=false", "--ignore-not-found", "-n",
                        obj["metadata"]["namespace"], obj["kind"], obj["metadata"]["name"])
        eventually(lambda: not list(admin.list(f"/api/v1/namespaces/{identities.NAMESPACE}"
                                               "/pods")),
                   60, "the manifests' pods deleted")


def allowed(api: KubeClient, sa: str, verb: str, resource: str, namespace: str = "",
            group: str = "") -> bool:
    """Whether the API server would let ServiceAccount `sa` of kovn-system do this, with the
    groups its token carries."""
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": f"system:serviceaccount:{identities.NAMESPACE}:{sa}",
                       "groups": ["system:serviceaccounts",
                                  f"system:serviceaccounts:{identities.NAMESPACE}",
                                  "system:authenticated"],
                       "resourceAttributes": {"verb": verb, "resource": resource,
                                              "group": group, "namespace": namespace}}}
    answer = api.create("/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
    return bool(answer["status"].get("allowed"))


def test_server_side_dry_run_accepts_every_object(kube_sandbox: Sandbox) -> None:
    result = kubectl(kube_sandbox, "apply", "--dry-run=server", "-k", str(MANIFESTS))
    assert result.returncode == 0, result.stderr
    assert "(server dry run)" in result.stdout
    # The sandbox records what kubectl apply expects on the identities it applied (its CRDs
    # are server-side applied only: kubectl warns about those, harmlessly).
    warnings = [line for line in result.stderr.splitlines() if "Warning" in line]
    assert all("customresourcedefinitions/" in line for line in warnings), warnings


def test_apply_creates_every_object(kube_sandbox: Sandbox, applied: list[dict[str, Any]]
                                    ) -> None:
    kinds = {o["kind"] for o in applied}
    assert {"Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole",
            "ClusterRoleBinding", "Role", "RoleBinding", "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding", "ConfigMap", "Service", "StatefulSet",
            "Deployment", "DaemonSet"} <= kinds
    found = kubectl(kube_sandbox, "get", "-k", str(MANIFESTS), "-o", "name")
    assert found.returncode == 0, found.stderr
    names = set(found.stdout.split())
    assert len(names) == len(applied)
    for obj in applied:
        assert any(n.endswith("/" + obj["metadata"]["name"]) for n in names), obj["kind"]
    deployment = kubectl(kube_sandbox, "get", "-n", identities.NAMESPACE, "deployment",
                         "kovn-controller", "-o", "jsonpath={.spec.replicas}")
    assert deployment.stdout == "2"


def test_no_service_account_of_kovn_system_reads_secrets(kube_sandbox: Sandbox,
                                                         admin: KubeClient,
                                                         applied: list[dict[str, Any]]) -> None:
    accounts = {sa["metadata"]["name"] for sa in admin.list(
        f"/api/v1/namespaces/{identities.NAMESPACE}/serviceaccounts")}
    assert {"default", *identities.SERVICE_ACCOUNTS} <= accounts
    for sa in accounts:
        for verb in ("get", "list", "watch"):
            for namespace in ("", identities.NAMESPACE, "default"):
                assert not allowed(admin, sa, verb, "secrets", namespace), (sa, verb, namespace)
        as_user = f"--as=system:serviceaccount:{identities.NAMESPACE}:{sa}"
        can = kubectl(kube_sandbox, "auth", "can-i", "list", "secrets", "-A", as_user)
        assert can.stdout.strip() == "no", (sa, can.stdout, can.stderr)


def test_kovn_identities_cannot_delete_nodes_and_have_their_own_rights(
        admin: KubeClient, applied: list[dict[str, Any]]) -> None:
    for sa in identities.SERVICE_ACCOUNTS:
        assert not allowed(admin, sa, "delete", "nodes"), sa
        assert not allowed(admin, sa, "create", "pods", "default"), sa
    controller, node = identities.SERVICE_ACCOUNTS
    assert allowed(admin, controller, "patch", "pods", "default")
    assert allowed(admin, controller, "update", "leases", identities.NAMESPACE,
                   "coordination.k8s.io")
    assert not allowed(admin, controller, "update", "leases", "default", "coordination.k8s.io")
    assert not allowed(admin, controller, "get", "pods", "default")  # list/watch suffice
    assert allowed(admin, node, "get", "pods", "default")
    assert not allowed(admin, node, "patch", "pods", "default")
    assert allowed(admin, node, "patch", "nodes")


def _refusal(api: KubeClient, path: str, body: dict[str, Any]) -> str:
    """The API server's message refusing this merge patch ("" when it was accepted)."""
    try:
        api.merge_patch(path, body)
    except KubeError as exc:
        assert exc.status == 403, exc
        return exc.reason
    return ""


def test_the_controllers_token_writes_annotations_but_not_spec_or_labels(
        kube_sandbox: Sandbox, admin: KubeClient, applied: list[dict[str, Any]]) -> None:
    admin.apply(f"/api/v1/namespaces/{NS}", {"apiVersion": "v1", "kind": "Namespace",
                                             "metadata": {"name": NS}}, "kovn-test")
    admin.create(f"/api/v1/namespaces/{NS}/pods", pod_manifest(NS, "target"))
    config = kube_sandbox.config
    controller = KubeClient(identities.kubeconfig_for(config, identities.CONTROLLER_SA))
    node = KubeClient(identities.kubeconfig_for(config, identities.NODE_SA))
    pod = pod_path(NS, "target")
    try:
        patched = controller.merge_patch(pod, {"metadata": {"annotations": {"t/x": "1"}}})
        assert patched["metadata"]["annotations"]["t/x"] == "1"
        # The policy is loaded asynchronously after `up`; it refuses within seconds.
        for body in ({"metadata": {"labels": {"t": "moved"}}},
                     {"spec": {"activeDeadlineSeconds": 30}},
                     {"metadata": {"finalizers": ["t/hold"]}}):
            reason = eventually(lambda b=body: _refusal(controller, pod, b), 15,
                                f"{body} refused")
            assert POLICY in reason, reason
        current = admin.get(pod)
        assert not current["metadata"].get("labels") and not current["metadata"].get(
            "finalizers") and "activeDeadlineSeconds" not in current["spec"]
        assert "cannot patch" in _refusal(node, pod, {"metadata": {"annotations": {"t": "y"}}})
        # The node agent writes its Node's annotations, nothing else of it.
        name = kube_sandbox.nodes[0].name
        node.merge_patch(node_path(name), {"metadata": {"annotations": {"t/x": "1"}}})
        assert POLICY in _refusal(node, node_path(name), {"spec": {"unschedulable": True}})
        assert POLICY in _refusal(node, node_path(name), {"metadata": {"labels": {"t": "x"}}})
        assert "cannot delete" in _kube_error(lambda: node.delete(node_path(name)))
    finally:
        admin.merge_patch(node_path(kube_sandbox.nodes[0].name),
                          {"metadata": {"annotations": {"t/x": None}}})
        admin.delete(f"/api/v1/namespaces/{NS}")
        controller.close()
        node.close()


def _kube_error(call: Any) -> str:
    try:
        call()
    except KubeError as exc:
        return exc.reason
    return ""
