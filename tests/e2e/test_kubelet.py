"""The sandbox kubelet against the real API server, with a stand-in CNI plugin.

The plugin here is a small shell script exec'd exactly as the kubelet execs `kovn-cni`
(inside a node netns, CNI_* environment, config on stdin): it records what it was given and
answers with canned results or errors, so the kubelet's side of the contract is checked in
isolation: the call itself, retries and their Events and conditions, status, the servers,
readiness, deletion. The real plugin and agent are exercised by test_network_model.py, and
here by the pods without containerPorts on the session's `cluster_sandbox` (they must run,
be Ready and reach other pods like any pod, also after a kubelet restart).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kube.client import KubeError
from sandbox.cluster import Sandbox
from sandbox.controlplane import eventually
from sandbox.netns import netns_list
from sandbox.podruntime import find_record
from sandbox.podstatus import container_id, pod_netns
from sandbox.probe import ping, probe
from tests.e2e.controlplane import REPO, Cluster, condition

pytestmark = pytest.mark.e2e

NODE = "ghost"  # a node of our own: the session's nodes keep their heartbeat
NS = "kl-test"
PLUGIN = """#!/bin/sh
# Records each call; ADD fails with code 11 while $DIR/fail11 holds a positive count, always
# with code 7 for pods named bad-*, else succeeds with the address in $DIR/address.
DIR=$(dirname "$0")
conf=$(cat)
printf '%s\\n' "{\\"command\\": \\"$CNI_COMMAND\\", \\"containerid\\": \\"$CNI_CONTAINERID\\", \
\\"netns\\": \\"$CNI_NETNS\\", \\"ifname\\": \\"$CNI_IFNAME\\", \\"args\\": \\"$CNI_ARGS\\", \
\\"path\\": \\"$CNI_PATH\\", \\"conf\\": $conf}" >> "$DIR/calls.jsonl"
[ "$CNI_COMMAND" = ADD ] || exit 0
case "$CNI_ARGS" in *K8S_POD_NAME=bad-*)
  echo '{"cniVersion": "1.1.0", "code": 7, "msg": "invalid network config", "details": "x"}'
  exit 1;;
esac
n=$(cat "$DIR/fail11" 2>/dev/null || echo 0)
if [ "$n" -gt 0 ]; then
  echo $((n - 1)) > "$DIR/fail11"
  echo '{"cniVersion": "1.1.0", "code": 11, "msg": "no pod-network annotation yet"}'
  exit 1
fi
echo "{\\"cniVersion\\": \\"1.1.0\\", \\"interfaces\\": [{\\"name\\": \\"eth0\\", \
\\"sandbox\\": \\"$CNI_NETNS\\"}], \\"ips\\": [{\\"address\\": \\"$(cat "$DIR/address")/24\\", \
\\"interface\\": 0}]}"
"""


@pytest.fixture(scope="module")
def kubelet(kube_sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Path]:
    """A sandbox kubelet for node `ghost` (in node1's netns) using the stand-in plugin."""
    d = Path(tmp_path_factory.mktemp("kubelet"))
    (d / "bin").mkdir()
    plugin = d / "bin" / "fake-cni"
    plugin.write_text(PLUGIN)
    plugin.chmod(0o755)
    (d / "bin" / "address").write_text("10.99.0.7")
    conf = {"cniVersion": "1.1.0", "name": "kovn", "plugins": [
        {"type": "fake-cni", "socket": "/nowhere.sock"}, {"type": "never-called"}]}
    (d / "net.conflist").write_text(json.dumps(conf))
    node = kube_sandbox.nodes[0]
    argv = [sys.executable, "-m", "sandbox.kubelet", "--node", NODE, "--node-ip", "192.0.2.99",
            "--node-netns", node.netns, "--kubeconfig", str(kube_sandbox.kubeconfig),
            "--cni-conf", str(d / "net.conflist"), "--cni-bin", str(d / "bin"),
            "--state", str(d / "state"), "--prefix", kube_sandbox.config.prefix]
    with (d / "kubelet.log").open("ab") as log:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=log)
    cluster = Cluster(kube_sandbox.kubeconfig)
    try:
        eventually(lambda: condition(_node(cluster), "Ready").get("status") == "True",
                   what=f"node {NODE} registered Ready by the kubelet (see {d / 'kubelet.log'})")
        cluster.namespace(NS)
        yield d
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for pod in cluster.pods(NS):
            cluster.delete_pod(NS, pod["metadata"]["name"])  # nobody finalizes them now
        cluster.api.call("DELETE", f"/api/v1/nodes/{NODE}")


def _node(cluster: Cluster) -> dict[str, Any] | None:
    try:
        return cluster.api.call("GET", f"/api/v1/nodes/{NODE}")
    except Exception:
        return None


def pod(name: str, probe_port: int | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": "kovn.io/serve-hostname",
                                 "ports": [{"containerPort": 8080}]}
    if probe_port:
        container["readinessProbe"] = {"tcpSocket": {"port": probe_port}, "periodSeconds": 1,
                                       "timeoutSeconds": 1}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"nodeName": NODE, "containers": [container]}}


def calls(d: Path, pod_name: str) -> list[dict[str, Any]]:
    path = d / "bin" / "calls.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [c for c in map(json.loads, lines) if f"K8S_POD_NAME={pod_name};" in c["args"]]


def test_runs_a_pod_like_a_runtime_and_retries_try_again_later(
        kube_sandbox: Sandbox, kubelet: Path) -> None:
    cluster = Cluster(kube_sandbox.kubeconfig)
    (kubelet / "bin" / "fail11").write_text("2")
    created = cluster.create_pod(pod("web"))
    uid = created["metadata"]["uid"]
    running = eventually(lambda: (p := cluster.pod(NS, "web")) and
                         condition(p, "Ready").get("status") == "True" and p,
                         what="pod Ready after two 'try again later' answers")
    status = running["status"]
    assert status["phase"] == "Running"
    assert (status["podIP"], status["podIPs"]) == ("10.99.0.7", [{"ip": "10.99.0.7"}])
    assert status["hostIP"] == "192.0.2.99"
    assert status["startTime"]
    for kind in ("PodScheduled", "Initialized", "ContainersReady", "PodReadyToStartContainers"):
        assert condition(running, kind)["status"] == "True", kind
    (container,) = status["containerStatuses"]
    assert container["ready"] and container["started"] and "running" in container["state"]
    assert container["containerID"].startswith("kovn-sandbox://")
    # Exactly what a runtime passes: 3 ADDs (2 refused), same container id and netns.
    adds = calls(kubelet, "web")
    assert [c["command"] for c in adds] == ["ADD"] * 3
    netns = pod_netns(kube_sandbox.config.prefix, NS, "web", uid)
    for call in adds:
        assert call["containerid"] == container_id(uid)
        assert call["netns"] == f"/var/run/netns/{netns}"
        assert call["ifname"] == "eth0"
        assert f"K8S_POD_NAMESPACE={NS};" in call["args"] and f"K8S_POD_UID={uid}" in call["args"]
        assert call["path"] == str(kubelet / "bin")
        assert call["conf"] == {"type": "fake-cni", "socket": "/nowhere.sock", "name": "kovn",
                                "cniVersion": "1.1.0"}
    events = [e for e in cluster.events(NS, "web") if e["reason"] == "FailedCreatePodSandBox"]
    assert events and "code 11: no pod-network annotation yet" in events[0]["message"]
    assert events[0]["type"] == "Warning" and events[0]["source"]["host"] == NODE
    # The "container": a server in the pod's netns answering with the pod's name.
    assert netns in netns_list()
    assert probe(netns, "127.0.0.1", 8080) == "web 127.0.0.1"
    # ADD durations are recorded for the benchmark.
    logged = [json.loads(line) for line in
              (kubelet / "state" / "cni-add.jsonl").read_text().splitlines()]
    assert [bool(e["error"]) for e in logged if e["uid"] == uid] == [True, True, False]

    cluster.api.call("DELETE", f"/api/v1/namespaces/{NS}/pods/web")  # default grace period
    eventually(lambda: cluster.pod(NS, "web") is None, what="deletion confirmed by the kubelet")
    dels = [c for c in calls(kubelet, "web") if c["command"] == "DEL"]
    assert len(dels) == 1 and dels[0]["conf"]["prevResult"]["ips"][0]["address"] == \
        "10.99.0.7/24"
    assert netns not in netns_list()
    assert not list((kubelet / "state" / "pods").iterdir())


def test_failing_add_is_reported_and_deletion_still_completes(
        kube_sandbox: Sandbox, kubelet: Path) -> None:
    cluster = Cluster(kube_sandbox.kubeconfig)
    cluster.create_pod(pod("bad-1"))
    failed = eventually(lambda: (p := cluster.pod(NS, "bad-1")) and
                        condition(p, "PodReadyToStartContainers").get("status") == "False"
                        and p, what="sandbox failure reported in the pod's conditions")
    assert failed["status"]["phase"] == "Pending"
    message = condition(failed, "PodReadyToStartContainers")["message"]
    assert "code 7: invalid network config (x)" in message
    assert condition(failed, "Ready")["status"] == "False"
    eventually(lambda: [e for e in cluster.events(NS, "bad-1")
                        if e["reason"] == "FailedCreatePodSandBox"], what="event posted")
    cluster.api.call("DELETE", f"/api/v1/namespaces/{NS}/pods/bad-1")
    eventually(lambda: cluster.pod(NS, "bad-1") is None, what="deleted although never started")
    assert calls(kubelet, "bad-1")[-1]["command"] == "DEL"


def test_readiness_follows_the_probe(kube_sandbox: Sandbox, kubelet: Path) -> None:
    """10.99.0.7 is not reachable from the node: the probe fails, the pod runs unready."""
    cluster = Cluster(kube_sandbox.kubeconfig)
    cluster.create_pod(pod("unready", probe_port=8080))
    running = eventually(lambda: (p := cluster.pod(NS, "unready")) and
                         p["status"].get("phase") == "Running" and p, what="pod Running")
    assert condition(running, "Ready")["status"] == "False"
    assert condition(running, "ContainersReady")["reason"] == "ContainersNotReady"
    assert running["status"]["containerStatuses"][0]["ready"] is False
    cluster.delete_pod(NS, "unready")
    eventually(lambda: cluster.pod(NS, "unready") is None, what="pod gone")


# --- pods without containerPorts, on the real cluster (kovn-cni, node agents, kubelets) -----

PORTLESS_NS = "kl-portless"
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.52"


def portless_pod(name: str) -> dict[str, Any]:
    """`kubectl run NAME --image=busybox -- sleep 3600`: no containerPort, no probe."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": PORTLESS_NS, "labels": {"run": name}},
            "spec": {"containers": [{"name": name, "image": "busybox",
                                     "args": ["sleep", "3600"]}],
                     "terminationGracePeriodSeconds": 0}}


def portless_deployment(name: str, replicas: int) -> dict[str, Any]:
    """`kubectl create deployment NAME --image=agnhost` (no --port), spread over the nodes so
    that pings cross the overlay too."""
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": PORTLESS_NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "topologySpreadConstraints": [{
                             "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                             "whenUnsatisfiable": "DoNotSchedule",
                             "labelSelector": {"matchLabels": labels}}],
                         "terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "agnhost", "image": AGNHOST}]}}}}


def _service_account_ready(cluster: Cluster, namespace: str) -> bool:
    try:
        cluster.api.call("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
    except KubeError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _running_ready(cluster: Cluster, selector: str, count: int) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        items = [p for p in cluster.pods(PORTLESS_NS, selector)
                 if not p["metadata"].get("deletionTimestamp")]
        done = [p for p in items if p["status"].get("phase") == "Running"
                and condition(p, "Ready").get("status") == "True" and p["status"].get("podIP")]
        return done if len(done) == count == len(items) else None

    return eventually(ready, 90, f"{count} pod(s) {selector} Running and Ready with a podIP")


def _assert_running_and_ready(item: dict[str, Any]) -> None:
    status = item["status"]
    assert status["phase"] == "Running", status
    for kind in ("PodScheduled", "PodReadyToStartContainers", "Initialized",
                 "ContainersReady", "Ready"):
        assert condition(item, kind)["status"] == "True", (kind, status)
    (container,) = status["containerStatuses"]
    assert container["ready"] and container["started"] and "running" in container["state"]
    assert status["podIPs"] == [{"ip": status["podIP"]}]


def test_pods_without_ports_run_are_ready_reach_pods_and_survive_a_kubelet_restart(
        cluster_sandbox: Sandbox) -> None:
    cluster = Cluster(cluster_sandbox.kubeconfig)
    cluster.namespace(PORTLESS_NS)
    eventually(lambda: _service_account_ready(cluster, PORTLESS_NS),
               what=f"ServiceAccount {PORTLESS_NS}/default")
    deployments = f"/apis/apps/v1/namespaces/{PORTLESS_NS}/deployments"
    try:
        cluster.create_pod(portless_pod("sleeper"))
        cluster.api.create(deployments, portless_deployment("quiet", 3))
        (sleeper,) = _running_ready(cluster, "run=sleeper", 1)
        quiet = _running_ready(cluster, "app=quiet", 3)
        pods = [sleeper, *quiet]
        for item in pods:
            _assert_running_and_ready(item)
        assert {p["spec"]["nodeName"] for p in quiet} == {n.name for n in cluster_sandbox.nodes}
        netns = {}
        for item in pods:
            name = item["metadata"]["name"]
            record = find_record(cluster_sandbox.kubelet_states(), PORTLESS_NS, name)
            assert record is not None and record.pod_ips == [item["status"]["podIP"]], name
            netns[name] = record.netns
        # Real packets, both ways, between the portless pods (same node and across nodes).
        sleeper_ip = sleeper["status"]["podIP"]
        for item in quiet:
            name, pod_ip = item["metadata"]["name"], item["status"]["podIP"]
            assert ping(netns["sleeper"], pod_ip), f"sleeper -> {name} {pod_ip}"
            assert ping(netns[name], sleeper_ip), f"{name} -> sleeper {sleeper_ip}"

        # A kubelet restart adopts them: no new ADD, never reported as not started again.
        node = cluster_sandbox.node(sleeper["spec"]["nodeName"])
        mine = [p for p in pods if p["spec"]["nodeName"] == node.name]
        log = node.dir / "kubelet.log"
        offset = log.stat().st_size
        add_log = cluster_sandbox.kubelet_states()[cluster_sandbox.nodes.index(node)] \
            / "cni-add.jsonl"
        adds_before = add_log.read_text().count("\n")
        cluster_sandbox.restart(f"{node.name}/kubelet")
        for item in mine:
            line = f"pod {PORTLESS_NS}/{item['metadata']['name']} running with"
            eventually(lambda line=line: line in log.read_text()[offset:], 60,
                       f"{line!r} in {log} after the kubelet restart")
        assert add_log.read_text().count("\n") == adds_before, "adopted pods need no CNI ADD"
        for item in mine:
            now = cluster.pod(PORTLESS_NS, item["metadata"]["name"])
            assert now is not None and now["metadata"]["uid"] == item["metadata"]["uid"]
            _assert_running_and_ready(now)
            assert now["status"]["podIP"] == item["status"]["podIP"]
            assert condition(now, "Ready")["lastTransitionTime"] == \
                condition(item, "Ready")["lastTransitionTime"], "Ready never flipped"
        for item in quiet:
            assert ping(netns["sleeper"], item["status"]["podIP"]), "after the restart"
    finally:
        try:
            cluster.api.call("DELETE", f"{deployments}/quiet",
                             {"propagationPolicy": "Foreground"})
        except KubeError as exc:
            if exc.status != 404:
                raise
        cluster.delete_pod(PORTLESS_NS, "sleeper")
    eventually(lambda: not cluster.pods(PORTLESS_NS), 60, f"the pods of {PORTLESS_NS} gone")
    # Grace period 0: the API forgets them at once, the kubelets tear them down after.
    eventually(lambda: not set(netns.values()) & set(netns_list()), 30,
               "their netns deleted by the kubelets")
