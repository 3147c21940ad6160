"""NetworkPolicy beyond the reachability matrix: ACL log lines that name the policy, a bad
logging annotation reported without disturbing anything, connections established before a
policy, and readiness probes from the node under deny-all. Real packets, real API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from controller.isolation import ACL_LOGGING
from sandbox.central import sb_remote
from sandbox.cluster import Sandbox
from sandbox.controlplane import eventually
from sandbox.probe import probe
from tests.e2e.controlplane import REPO, Cluster, condition
from tests.e2e.test_network_model import PORT, Flow, Pod, create_deployment, ready_pods

pytestmark = pytest.mark.e2e
NS = "np-behaviour"


@pytest.fixture(scope="module")
def cluster(cluster_sandbox: Sandbox) -> Cluster:
    cluster = Cluster(cluster_sandbox.kubeconfig)
    create_deployment(cluster, NS, "web", 2)
    return cluster


@pytest.fixture(scope="module")
def web(cluster_sandbox: Sandbox, cluster: Cluster) -> list[Pod]:
    return ready_pods(cluster_sandbox, cluster, NS, "web", 2)


def policies_path(namespace: str = NS) -> str:
    return f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"


def apply_policy(cluster: Cluster, name: str, spec: dict[str, Any]) -> None:
    body = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}
    cluster.create_or_get(policies_path(), body)


def delete_policies(cluster: Cluster) -> None:
    for item in cluster.api.call("GET", policies_path()).get("items", []):
        cluster.api.call("DELETE", f"{policies_path()}/{item['metadata']['name']}")


def annotate_namespace(cluster: Cluster, value: str | None) -> None:
    cluster.api.merge_patch(f"/api/v1/namespaces/{NS}",
                            {"metadata": {"annotations": {ACL_LOGGING: value}}})


def reaches(src: Pod, dst: Pod, timeout: float = 0.5) -> bool:
    answer = probe(src.netns, dst.ip, PORT, "tcp", timeout=timeout)
    return answer is not None and answer.split()[0] == dst.name


def ovn_controller_logs(sandbox: Sandbox, since: dict[str, int] | None = None) -> dict[str, str]:
    """Each node's ovn-controller log (from offset since[node], when given)."""
    return {n.name: (n.dir / "ovnc.log").read_text(errors="replace")[(since or {}).get(n.name, 0):]
            for n in sandbox.nodes}


@pytest.fixture(autouse=True)
def clean(cluster: Cluster, web: list[Pod]) -> Any:
    yield
    delete_policies(cluster)
    annotate_namespace(cluster, None)
    eventually(lambda: reaches(web[0], web[1], 1.0) or None, 15, "policies gone")


def test_acl_log_lines_name_the_policy_and_the_default_deny(cluster_sandbox: Sandbox,
                                                             cluster: Cluster,
                                                             web: list[Pod]) -> None:
    first, second = web
    annotate_namespace(cluster, json.dumps({"deny": "info", "allow": "info"}))
    # web[0] accepts only web[1]; web[1] accepts nothing.
    apply_policy(cluster, "only-from-second", {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"podSelector": {"matchExpressions": [
            {"key": "pod-template-hash", "operator": "Exists"}]}}],
            "ports": [{"port": PORT}]}]})
    eventually(lambda: reaches(second, first) or None, 15, "the allowed connection")
    before = {n: len(t) for n, t in ovn_controller_logs(cluster_sandbox).items()}
    assert reaches(second, first)
    apply_policy(cluster, "deny-second", {"podSelector": {"matchLabels": {"app": "web"}},
                                          "policyTypes": ["Ingress"]})
    # Both now select both pods; the allow still admits web pods: open a port nobody allows.
    assert probe(first.netns, second.ip, PORT + 1, "tcp", timeout=0.5) is None

    def logged() -> str | None:
        text = "".join(ovn_controller_logs(cluster_sandbox, before).values())
        allow = f'name="{NS}/only-from-second:ingress:0", verdict=allow'
        deny = f'name="{NS}:default-deny:ingress", verdict=drop'
        return text if allow in text and deny in text else None

    eventually(logged, 10, "log lines naming the policy and the default deny")


def test_bad_logging_annotation_is_an_event_and_disturbs_nothing(cluster: Cluster,
                                                                 web: list[Pod]) -> None:
    first, second = web
    apply_policy(cluster, "deny-all", {"podSelector": {}, "policyTypes": ["Ingress"]})
    eventually(lambda: (not reaches(second, first)) or None, 15, "deny-all in force")
    annotate_namespace(cluster, "loud please")

    def reported() -> list[dict[str, Any]] | None:
        found = [e for e in cluster.events("default", NS)  # cluster-scoped: in default
                 if e["reason"] == "InvalidACLLogging"]
        return found or None

    events = eventually(reported, 15, "an InvalidACLLogging Event on the namespace")
    assert "acl-logging" in events[0]["message"]
    assert not reaches(second, first), "the policy stayed in force"
    delete_policies(cluster)
    eventually(lambda: reaches(second, first) or None, 15, "the policy's deletion still acts")


def test_a_new_policy_cuts_established_connections_it_does_not_allow(
        cluster: Cluster, web: list[Pod]) -> None:
    """Documented behaviour (controller/aclorder.py): OVN re-evaluates the ACLs on the next
    packet of a committed connection and marks it blocked when nothing allows it."""
    first, second = web
    flow = Flow(first, second, 7011)
    try:
        flow.run_for(0.3)
        assert not flow.errors and flow.sent > 0
        apply_policy(cluster, "deny-all", {"podSelector": {}, "policyTypes": ["Ingress"]})
        eventually(lambda: (not reaches(first, second)) or None, 15, "deny-all in force")
        flow.conn.settimeout(1.0)
        flow.run_for(0.5)
        assert flow.errors, "the established connection survived a policy that denies it"
    finally:
        flow.close()


def test_readiness_probes_from_the_node_pass_under_deny_all(cluster: Cluster,
                                                            web: list[Pod]) -> None:
    apply_policy(cluster, "deny-all", {"podSelector": {},
                                       "policyTypes": ["Ingress", "Egress"]})
    eventually(lambda: (not reaches(web[0], web[1])) or None, 15, "deny-all in force")
    time.sleep(5)  # > 2 probe periods
    for pod in cluster.pods(NS, "app=web"):
        assert condition(pod, "Ready").get("status") == "True", pod["metadata"]["name"]


def trace(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", "trace", *args,
                           "--nb", sandbox.nb_remote, "--sb", sb_remote(sandbox.config)],
                          capture_output=True, text=True, check=False, cwd=REPO)


def test_kovn_trace_names_the_rule_or_the_default_deny_that_decided(
        cluster_sandbox: Sandbox, cluster: Cluster, web: list[Pod]) -> None:
    first, second = web
    apply_policy(cluster, "allow-web", {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                     "ports": [{"protocol": "UDP", "port": 53}]},
                    {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                     "ports": [{"port": PORT}]}]})
    eventually(lambda: (probe(first.netns, second.ip, PORT + 1, "tcp", 0.5) is None
                        and reaches(first, second)) or None, 15, "the policy in force")
    allowed = trace(cluster_sandbox, first.key, second.key, "tcp", str(PORT))
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert f"allowed by NetworkPolicy {NS}/allow-web, ingress rule 1" in allowed.stdout
    dropped = trace(cluster_sandbox, first.key, second.ip, "tcp", str(PORT + 1))
    assert dropped.returncode == 1, dropped.stdout + dropped.stderr
    assert f"dropped by default deny of namespace {NS} (ingress)" in dropped.stdout
