"""The sandbox's kovn controller and node agents run as the manifests' ServiceAccounts.

A cluster runs `kovn controller` as kovn-system/kovn-controller and `kovn node` as
kovn-system/kovn-node, with only the rights manifests/rbac/ grants. The sandbox does the same
by default, so every e2e test that drives them proves those roles suffice (a missing verb is
a 403 in their logs and a failing test, not a surprise on a real cluster):

- at `up`, right after the CRDs, apply IDENTITY_MANIFESTS (the namespace, the ServiceAccounts,
  the ClusterRoles and bindings, the leader-election Role and the admission policy; never the
  workloads) from manifests/ to the sandbox's API server with the admin identity;
- get each ServiceAccount a token through the TokenRequest API, valid for TOKEN_SECONDS, and
  write a kubeconfig with it (CA + server + bearer token): state_dir/kube/<sa>.kubeconfig;
- `kubeconfig_for` hands the controller and the agents those kubeconfigs (sandbox/kube.py
  start_controller, sandbox/workloads.py agent_argv). The sandbox kubelets, the heartbeat, the
  relays and the tests keep the admin kubeconfig: they stand in for Kubernetes' own parts.

`SandboxConfig.service_accounts=False` (`kovn sandbox up --admin-identities`) runs the
controller and the agents as the admin instead; the namespace kovn-system is created either
way (the controller's leader-election Lease lives there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from kube.client import KubeClient, KubeError
from sandbox.config import SandboxConfig
from sandbox.errors import SandboxError
from sandbox.kube_pki import CLUSTER_NAME, Pki

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
NAMESPACE = "kovn-system"
CONTROLLER_SA = "kovn-controller"
NODE_SA = "kovn-node"
SERVICE_ACCOUNTS = (CONTROLLER_SA, NODE_SA)
NAMESPACE_MANIFEST = "namespace.yaml"
IDENTITY_MANIFESTS = (NAMESPACE_MANIFEST, "rbac/controller.yaml", "rbac/node.yaml",
                      "rbac/admission.yaml")
TOKEN_SECONDS = 365 * 24 * 3600  # a sandbox outlives no token
FIELD_MANAGER = "kovn-sandbox"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

RBAC = "/apis/rbac.authorization.k8s.io/v1"
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
PATHS = {  # kind -> the object's path (server-side apply goes to the object itself)
    "Namespace": "/api/v1/namespaces/{name}",
    "ServiceAccount": "/api/v1/namespaces/{namespace}/serviceaccounts/{name}",
    "ClusterRole": RBAC + "/clusterroles/{name}",
    "ClusterRoleBinding": RBAC + "/clusterrolebindings/{name}",
    "Role": RBAC + "/namespaces/{namespace}/roles/{name}",
    "RoleBinding": RBAC + "/namespaces/{namespace}/rolebindings/{name}",
    "ValidatingAdmissionPolicy": ADMISSION + "/validatingadmissionpolicies/{name}",
    "ValidatingAdmissionPolicyBinding": ADMISSION + "/validatingadmissionpolicybindings/{name}",
}


def username(sa: str) -> str:
    """The user name the API server gives ServiceAccount `sa` of kovn-system."""
    return f"system:serviceaccount:{NAMESPACE}:{sa}"


def sa_kubeconfig(config: SandboxConfig, sa: str) -> Path:
    return config.state_dir / "kube" / f"{sa}.kubeconfig"


def kubeconfig_for(config: SandboxConfig, sa: str) -> Path:
    """The kubeconfig the daemon acting as ServiceAccount `sa` runs with: that account's,
    or the admin's with service_accounts off."""
    if config.service_accounts:
        return sa_kubeconfig(config, sa)
    from sandbox.kube import kubeconfig  # sandbox.kube calls this module: import late

    return kubeconfig(config)


def manifest_objects(names: tuple[str, ...] = IDENTITY_MANIFESTS,
                     directory: Path = MANIFESTS) -> list[dict[str, Any]]:
    """The objects of the given manifest files, in order."""
    objects = []
    for name in names:
        path = directory / name
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError) as exc:
            raise SandboxError(f"cannot read {path}: {exc}") from exc
        objects += [doc for doc in docs if doc]
    return objects


def object_path(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    try:
        template = PATHS[obj["kind"]]
    except KeyError:
        raise SandboxError(f"the sandbox does not know where {obj['kind']} objects live "
                           f"(add it to sandbox/identities.py PATHS)") from None
    return template.format(name=quote(meta["name"]), namespace=quote(meta.get("namespace", "")))


def apply_objects(api: KubeClient, objects: list[dict[str, Any]]) -> None:
    """Server-side apply, recording the object as `kubectl apply` does: a later
    `kubectl apply -k manifests/` on the sandbox then updates them without warnings."""
    for obj in objects:
        recorded = {**obj, "metadata": {**obj["metadata"], "annotations": {
            **(obj["metadata"].get("annotations") or {}),
            LAST_APPLIED: json.dumps(obj, separators=(",", ":"), sort_keys=True)}}}
        try:
            api.apply(object_path(obj), recorded, FIELD_MANAGER)
        except KubeError as exc:
            raise SandboxError(f"the API server refused {obj['kind']} "
                               f"{obj['metadata']['name']} of manifests/: {exc}") from exc


def request_token(api: KubeClient, sa: str, seconds: int = TOKEN_SECONDS) -> str:
    """A bound token of ServiceAccount `sa` from the TokenRequest API."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds}}
    answer = api.create(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{sa}/token", body)
    token = (answer.get("status") or {}).get("token")
    if not token:
        raise SandboxError(f"the API server issued no token for {username(sa)}: {answer}")
    return str(token)


def write_token_kubeconfig(path: Path, server: str, ca: Path, user: str, token: str) -> Path:
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME, "cluster": {
            "server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)  # a credential
    return path


def setup(config: SandboxConfig, api: KubeClient) -> str:
    """At `up`, after the CRDs (`api`: the admin's client): the namespace, and with
    service_accounts the identities and their kubeconfigs; a line saying what was done."""
    if not config.service_accounts:
        apply_objects(api, manifest_objects((NAMESPACE_MANIFEST,)))
        return (f"kube: namespace {NAMESPACE}; controller and agents run as the admin "
                "(--admin-identities)")
    apply_objects(api, manifest_objects())
    server = api.server
    ca = Pki(config.state_dir / "pki").ca
    for sa in SERVICE_ACCOUNTS:
        write_token_kubeconfig(sa_kubeconfig(config, sa), server, ca, username(sa),
                               request_token(api, sa))
    return (f"kube: controller runs as {username(CONTROLLER_SA)}, agents as "
            f"{username(NODE_SA)} (manifests/rbac; kubeconfigs in {config.state_dir / 'kube'})")


def describe(config: SandboxConfig) -> str:
    """The mode for `sandbox status`."""
    if not config.service_accounts:
        return "admin (--admin-identities)"
    return (f"ServiceAccounts {NAMESPACE}/{CONTROLLER_SA} (controller), {NAMESPACE}/{NODE_SA} "
            f"(agents): {sa_kubeconfig(config, CONTROLLER_SA)}, "
            f"{sa_kubeconfig(config, NODE_SA)}")
