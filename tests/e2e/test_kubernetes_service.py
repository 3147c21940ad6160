"""The `kubernetes` Service from a pod, as every in-cluster operator uses it: with its
ServiceAccount's token a pod lists pods through https://10.96.0.1:443. Real control plane,
the sandbox's per-node API relays (sandbox.apirelay) behind an ordinary OVN load balancer,
real packets and real TLS (curl checks the API server's certificate against the sandbox's CA)
from inside the pod's network namespace."""

from __future__ import annotations

import subprocess

import pytest

from contract.podnetwork import NODE_NETWORK, NodeNetwork
from kube.client import annotations, node_path
from sandbox import apirelay
from sandbox.cluster import Sandbox
from sandbox.controlplane import eventually, pod_manifest
from sandbox.podruntime import find_record
from tests.e2e.controlplane import Cluster, condition

pytestmark = pytest.mark.e2e
NS = "kapi"
SA = "lister"
SERVICE_IP = "10.96.0.1"


@pytest.fixture(scope="module")
def cluster(cluster_sandbox: Sandbox) -> Cluster:
    return Cluster(cluster_sandbox.kubeconfig)


@pytest.fixture(scope="module")
def client(cluster_sandbox: Sandbox, cluster: Cluster) -> str:
    """The netns of a pod running as ServiceAccount `lister`, which may list pods in NS."""
    api = cluster.api
    cluster.namespace(NS)
    api.create(f"/api/v1/namespaces/{NS}/serviceaccounts",
               {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA}})
    api.create(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "pod-lister"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]})
    api.create(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "pod-lister"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "pod-lister"},
        "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": NS}]})
    manifest = pod_manifest(NS, "client")
    manifest["spec"]["serviceAccountName"] = SA
    cluster.create_pod(manifest)
    eventually(lambda: condition(cluster.pod(NS, "client"), "Ready").get("status") == "True",
               60, "client pod Ready")
    record = find_record(cluster_sandbox.kubelet_states(), NS, "client")
    assert record is not None
    return record.netns


def token(cluster: Cluster) -> str:
    """A token of the ServiceAccount, from the TokenRequest API (as the kubelet gets one)."""
    answer = cluster.api.create(f"/api/v1/namespaces/{NS}/serviceaccounts/{SA}/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 600}})
    return str(answer["status"]["token"])


def curl(sandbox: Sandbox, netns: str, url: str, bearer: str | None = None,
         *extra: str) -> tuple[int, str]:
    """(HTTP status, body) of a GET from inside `netns` (0: no answer); TLS verified."""
    argv = ["ip", "netns", "exec", netns, "curl", "-sS", "-m", "5",
            "--cacert", str(sandbox.state_dir / "pki" / "ca.crt"), "-w", "\n%{http_code}",
            *extra, url]
    if bearer is not None:
        argv[5:5] = ["-H", f"Authorization: Bearer {bearer}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=15)
    body, _, code = done.stdout.rpartition("\n")
    return (int(code) if code.isdigit() else 0), body or done.stderr


def pods_url(host: str) -> str:
    return f"https://{host}/api/v1/namespaces/{NS}/pods"


def test_a_pod_lists_pods_through_the_kubernetes_service_with_its_token(
        cluster_sandbox: Sandbox, cluster: Cluster, client: str) -> None:
    bearer = token(cluster)

    def listed() -> tuple[int, str] | None:
        answer = curl(cluster_sandbox, client, pods_url(f"{SERVICE_IP}:443"), bearer)
        return answer if answer[0] == 200 else None

    status, body = eventually(listed, 20, "200 from https://10.96.0.1:443")
    assert '"kind": "PodList"' in body and '"name": "client"' in body, body[:500]
    # Every request is a new connection the load balancer places anew: all answer.
    for _ in range(6):
        assert curl(cluster_sandbox, client, pods_url(SERVICE_IP), bearer)[0] == 200
    # The certificate also names the Service (the sandbox pods resolve it without DNS server).
    status, body = curl(cluster_sandbox, client, pods_url("kubernetes.default.svc"), bearer)
    assert status == 200 and '"name": "client"' in body, (status, body[:500])


def test_a_request_without_a_token_reaches_the_api_server_and_is_refused(
        cluster_sandbox: Sandbox, client: str) -> None:
    status, body = curl(cluster_sandbox, client, pods_url(SERVICE_IP))
    assert status in (401, 403), (status, body[:500])
    assert '"kind": "Status"' in body  # the API server's own answer, not a proxy's


def test_every_node_publishes_its_relay_at_its_management_port(
        cluster_sandbox: Sandbox, cluster: Cluster, client: str) -> None:
    """The endpoints are each node's join address (kovn.io/node-network), and each one alone
    serves the API from the pod (curl pins the name to that address)."""
    joins = {}
    for node in cluster_sandbox.nodes:
        text = annotations(cluster.api.get(node_path(node.name)))[NODE_NETWORK]
        joins[node.name] = NodeNetwork.decode(text).address
    slc = cluster.api.get(apirelay.SLICE_PATH)
    assert slc["metadata"]["labels"] == {
        "kubernetes.io/service-name": "kubernetes",
        "endpointslice.kubernetes.io/managed-by": apirelay.MANAGED_BY}
    assert slc["ports"] == [{"name": "https", "port": apirelay.RELAY_PORT, "protocol": "TCP"}]
    assert {e["nodeName"]: e["addresses"][0] for e in slc["endpoints"]} == joins
    bearer = token(cluster)
    for node, ip in joins.items():
        host = f"kubernetes:{apirelay.RELAY_PORT}"
        status, body = curl(cluster_sandbox, client, pods_url(host), bearer,
                            "--resolve", f"{host}:{ip}")
        assert status == 200 and '"name": "client"' in body, (node, status, body[:500])
