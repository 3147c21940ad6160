"""The deployment manifests (manifests/) grant what kovn's code uses and nothing more, and fit
the code they run: flags, the CNI plugin and its conf, the sandbox's identity mode.

The expected rules below are the review point: widening a ClusterRole means changing this
list too, so the diff shows it. tests/e2e/test_manifests.py applies the manifests to a real
API server and checks the same rights from its side.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.main import build_parser
from node.cni_protocol import DEFAULT_SOCKET
from sandbox import identities
from sandbox.config import SandboxConfig
from sandbox.kube import bin_dir

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
NAMESPACE = "kovn-system"
Grants = dict[tuple[str, str], set[str]]

# (apiGroup, resource) -> verbs, per ClusterRole: what the code calls (see the comments in
# manifests/rbac/*.yaml for which code).
EXPECTED_CLUSTER_ROLES: dict[str, Grants] = {
    "kovn-controller": {
        ("", "pods"): {"list", "watch", "patch"},
        ("", "nodes"): {"list", "watch", "patch"},
        ("", "namespaces"): {"list", "watch"},
        ("", "services"): {"list", "watch"},
        ("", "events"): {"create"},
        ("discovery.k8s.io", "endpointslices"): {"list", "watch"},
        ("networking.k8s.io", "networkpolicies"): {"list", "watch"},
        ("kovn.io", "subnets"): {"get", "list", "watch", "create", "patch"},
        ("kovn.io", "subnets/status"): {"patch"},
        ("kovn.io", "qospolicies"): {"list", "watch"},
        ("kovn.io", "qospolicies/status"): {"patch"},
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    },
    "kovn-node": {
        ("", "nodes"): {"get", "patch"},
        ("", "pods"): {"get", "list"},
        ("", "services"): {"list", "watch"},
    },
}
EXPECTED_ROLES: dict[str, Grants] = {  # namespaced, in kovn-system
    "kovn-controller-leader-election": {("coordination.k8s.io", "leases"):
                                        {"get", "create", "update"}},
}
BOUND_TO = {"kovn-controller": "kovn-controller", "kovn-node": "kovn-node",
            "kovn-controller-leader-election": "kovn-controller"}
WORKLOAD_KINDS = {"Deployment", "DaemonSet", "StatefulSet", "Service", "ConfigMap", "Pod"}


@functools.cache
def load(relative: str) -> list[dict[str, Any]]:
    """The objects of one manifest file (parsed once: the CRDs are long; never mutated)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [d for d in yaml.load_all((MANIFESTS / relative).read_text(), Loader=loader) if d]


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())


def all_objects() -> list[dict[str, Any]]:
    return [obj for name in kustomization()["resources"] for obj in load(name)]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in all_objects() if o["kind"] == kind}


def grants(rules: list[dict[str, Any]]) -> Grants:
    """Rules as (group, resource) -> verbs; a wildcard, resourceNames or a non-resource URL
    fails here, so they cannot slip in unreviewed."""
    out: Grants = {}
    for rule in rules:
        assert "nonResourceURLs" not in rule and "resourceNames" not in rule, rule
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_cluster_roles_grant_exactly_what_the_code_uses() -> None:
    roles = by_kind("ClusterRole")
    assert set(roles) == set(EXPECTED_CLUSTER_ROLES)
    for name, expected in EXPECTED_CLUSTER_ROLES.items():
        assert grants(roles[name]["rules"]) == expected, name


def test_the_leader_election_role_is_namespaced_to_leases() -> None:
    roles = by_kind("Role")
    assert set(roles) == set(EXPECTED_ROLES)
    for name, expected in EXPECTED_ROLES.items():
        assert roles[name]["metadata"]["namespace"] == NAMESPACE
        assert grants(roles[name]["rules"]) == expected


def test_no_role_reads_secrets_or_deletes_anything() -> None:
    for role in [*by_kind("ClusterRole").values(), *by_kind("Role").values()]:
        for (_group, resource), verbs in grants(role["rules"]).items():
            assert resource != "secrets", role["metadata"]["name"]
            assert not verbs & {"delete", "deletecollection", "escalate", "bind",
                                "impersonate"}, (role["metadata"]["name"], resource, verbs)


def test_each_role_is_bound_to_its_own_service_account_only() -> None:
    bindings = {**by_kind("ClusterRoleBinding"), **by_kind("RoleBinding")}
    assert set(bindings) == set(BOUND_TO)
    accounts = by_kind("ServiceAccount")
    assert set(accounts) == set(identities.SERVICE_ACCOUNTS)
    for name, binding in bindings.items():
        assert binding["roleRef"]["name"] == name
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": BOUND_TO[name],
                                        "namespace": NAMESPACE}]


def test_the_admission_policy_keeps_kovn_to_annotations_of_pods_and_nodes() -> None:
    (policy,) = by_kind("ValidatingAdmissionPolicy").values()
    (binding,) = by_kind("ValidatingAdmissionPolicyBinding").values()
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert set(rule["resources"]) == {"pods", "nodes"} and rule["operations"] == ["UPDATE"]
    assert f"system:serviceaccounts:{NAMESPACE}" in spec["matchConditions"][0]["expression"]
    checked = " ".join(v["expression"] for v in spec["validations"])
    for part in ("spec", "labels", "finalizers", "ownerReferences"):
        assert part in checked
    assert "annotations" not in checked


def test_every_manifest_is_in_the_kustomization_and_the_sandbox_applies_no_workload() -> None:
    listed = set(kustomization()["resources"])
    generated = {f for g in kustomization()["configMapGenerator"] for f in g["files"]}
    on_disk = {str(p.relative_to(MANIFESTS)) for p in MANIFESTS.rglob("*")
               if p.is_file() and p.suffix in (".yaml", ".sh", ".conflist")
               and p.parts[len(MANIFESTS.parts)] != "examples" and p.name != "kustomization.yaml"}
    assert on_disk == listed | generated
    assert set(identities.IDENTITY_MANIFESTS) <= listed
    kinds = {o["kind"] for o in identities.manifest_objects()}
    assert kinds <= set(identities.PATHS) and not kinds & WORKLOAD_KINDS
    for obj in identities.manifest_objects():
        assert obj["metadata"].get("namespace", NAMESPACE) == NAMESPACE
        assert identities.object_path(obj).endswith("/" + obj["metadata"]["name"])


def test_the_crds_have_schemas_and_printer_columns() -> None:
    for crd in by_kind("CustomResourceDefinition").values():
        for version in crd["spec"]["versions"]:
            schema = version["schema"]["openAPIV3Schema"]
            assert schema["properties"]["spec"]["properties"], crd["metadata"]["name"]
            assert version["subresources"] == {"status": {}}
            columns = {c["name"] for c in version["additionalPrinterColumns"]}
            assert "Age" in columns and len(columns) >= 4


def _options(verb: str) -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[verb]._option_string_actions


def _container(kind: str, name: str, container: str) -> dict[str, Any]:
    spec = by_kind(kind)[name]["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == container)


def _config_env(container: dict[str, Any]) -> dict[str, str]:
    """Env var -> the kovn-config key it comes from."""
    out = {}
    for env in container.get("env", []):
        ref = env.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            assert ref["name"] == "kovn-config"
            out[env["name"]] = ref["key"]
    return out


@pytest.mark.parametrize(("kind", "name", "container", "verb"), [
    ("Deployment", "kovn-controller", "controller", "controller"),
    ("DaemonSet", "kovn-node", "kovn-node", "node"),
])
def test_configuration_reaches_flags_the_commands_know(kind: str, name: str, container: str,
                                                       verb: str) -> None:
    c = _container(kind, name, container)
    assert c["command"] == ["kovn", verb]
    config = by_kind("ConfigMap")["kovn-config"]["data"]
    from_config = _config_env(c)
    assert set(from_config.values()) <= set(config)
    known = _options(verb)
    for arg in c["args"]:
        flag, _, value = arg.partition("=")
        used = re.findall(r"\$\((\w+)\)", value)
        if any(var in from_config for var in used):
            assert flag in known, f"{kind} {name}: kovn {verb} has no {flag}"


def test_the_controller_deployment_elects_a_leader_among_two() -> None:
    deployment = by_kind("Deployment")["kovn-controller"]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kovn-controller" and pod["hostNetwork"] is True
    c = _container("Deployment", "kovn-controller", "controller")
    assert "--leader-elect" in c["args"] and "--metrics-address=0.0.0.0:9476" in c["args"]
    fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]
              if "fieldRef" in e.get("valueFrom", {})}
    assert fields == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9476}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9476}
    nb = by_kind("ConfigMap")["kovn-config"]["data"]["nb-remotes"].split(",")
    ips = by_kind("ConfigMap")["kovn-config"]["data"]["ovn-central-ips"].split()
    assert nb == [f"tcp:{ip}:6641" for ip in ips] and len(ips) == 3


def test_the_node_daemonset_runs_ovs_ovn_controller_and_the_agent() -> None:
    daemonset = by_kind("DaemonSet")["kovn-node"]["spec"]["template"]["spec"]
    assert daemonset["serviceAccountName"] == "kovn-node" and daemonset["hostNetwork"]
    assert [c["name"] for c in daemonset["containers"]] == ["ovs", "ovn-controller",
                                                            "kovn-node"]
    assert all(c["securityContext"]["privileged"] for c in daemonset["containers"])
    agent = _container("DaemonSet", "kovn-node", "kovn-node")
    assert agent["livenessProbe"]["httpGet"]["port"] == 9477
    assert agent["readinessProbe"]["httpGet"]["port"] == 9477
    assert f"--socket={DEFAULT_SOCKET}" in agent["args"]
    (init,) = daemonset["initContainers"]
    script = init["args"][0]
    assert "/host/opt/cni/bin/kovn-cni" in script and "/host/etc/cni/net.d/10-kovn" in script


def test_the_cni_conf_is_the_sandboxes_with_the_default_socket() -> None:
    conf = json.loads((MANIFESTS / "node" / "10-kovn.conflist").read_text())
    assert conf == {"cniVersion": "1.1.0", "name": "kovn",
                    "plugins": [{"type": "kovn-cni", "socket": DEFAULT_SOCKET}]}


def test_the_raft_script_creates_on_member_0_and_joins_elsewhere() -> None:
    script = (MANIFESTS / "ovn-central" / "raft-db.sh").read_text()
    assert "create-cluster" in script and "join-cluster" in script
    central = by_kind("StatefulSet")["ovn-central"]["spec"]
    assert central["replicas"] == 3 and central["serviceName"] == "ovn-central"
    assert by_kind("Service")["ovn-central"]["spec"]["clusterIP"] == "None"
    ports = {s: by_kind("Service")[s]["spec"]["ports"][0]["port"] for s in ("ovn-nb", "ovn-sb")}
    assert ports == {"ovn-nb": 6641, "ovn-sb": 6642}


def test_the_cni_plugin_zipapp_runs_on_the_standard_library_alone(tmp_path: Path) -> None:
    out = tmp_path / "kovn-cni"
    subprocess.run([str(REPO / "scripts" / "build-cni-plugin.sh"), str(out)], check=True,
                   env={**os.environ, "PYTHON": sys.executable})
    # -I -S: no site-packages, no PYTHONPATH, no current directory: only the zip and stdlib.
    result = subprocess.run([sys.executable, "-I", "-S", str(out)], input=b"",
                            env={"CNI_COMMAND": "VERSION"}, capture_output=True, cwd=tmp_path,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "1.1.0" in json.loads(result.stdout)["supportedVersions"]


@pytest.mark.skipif(not os.access(bin_dir() / "kubectl", os.X_OK), reason="no kubectl built")
def test_kustomize_renders_every_object_with_the_kovn_image() -> None:
    rendered = subprocess.run([str(bin_dir() / "kubectl"), "kustomize", str(MANIFESTS)],
                              capture_output=True, text=True, check=True).stdout
    objects = [d for d in yaml.safe_load_all(rendered) if d]
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {(o["kind"], o["metadata"]["name"]) for o in all_objects()} <= names
    assert sum(kind == "ConfigMap" for kind, _ in names) == 3  # config + 2 generated
    pods = [o["spec"]["template"]["spec"] for o in objects
            if "template" in (o.get("spec") or {})]
    assert len(pods) == 3
    images = {c["image"] for pod in pods
              for c in [*pod["containers"], *pod.get("initContainers", [])]}
    assert images == {"localhost/kovn:latest"}


def test_service_accounts_are_the_sandboxes_default_and_can_be_turned_off(
        tmp_path: Path) -> None:
    on = SandboxConfig(state_dir=tmp_path)
    assert on.service_accounts
    assert identities.kubeconfig_for(on, identities.CONTROLLER_SA) == \
        tmp_path / "kube" / "kovn-controller.kubeconfig"
    off = SandboxConfig(state_dir=tmp_path, service_accounts=False)
    assert identities.kubeconfig_for(off, identities.NODE_SA) == tmp_path / "kubeconfig"
    assert SandboxConfig.from_json(off.to_json()) == off
    parser = build_parser()
    args = parser.parse_args(["sandbox", "up", "--admin-identities"])
    assert args.service_accounts is False
    assert parser.parse_args(["sandbox", "up"]).service_accounts is True
    assert "admin" in identities.describe(off) and "kovn-node" in identities.describe(on)


def test_the_containerfile_builds_the_plugin_and_copies_every_shipped_package() -> None:
    text = (MANIFESTS / "Containerfile").read_text()
    shipped = tomllib.loads((REPO / "pyproject.toml").read_text())
    for package in shipped["tool"]["setuptools"]["packages"]:
        assert f"COPY {package} {package}" in text, package
    assert "build-cni-plugin.sh /opt/kovn/kovn-cni.pyz" in text


def test_the_controller_logs_in_at_the_api_server_the_manifests_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a pod, kopf's own login would dial https://kubernetes.default.svc, which nothing
    serves before kovn runs; the manifests set $KUBERNETES_SERVICE_HOST/PORT instead."""
    from operators import handlers

    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "ca.crt").write_text("ca")
    monkeypatch.setattr(handlers, "SERVICE_ACCOUNT", tmp_path)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.10")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    info = handlers.in_cluster_login()
    assert info is not None
    assert (info.server, info.token, info.ca_path) == \
        ("https://10.0.0.10:6443", "sa-token", str(tmp_path / "ca.crt"))
    env = {e["name"] for e in _container("Deployment", "kovn-controller", "controller")["env"]}
    assert {"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"} <= env
