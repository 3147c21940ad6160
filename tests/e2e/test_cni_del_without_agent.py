"""Deleting a pod while its node's agent is down, on the session's `cluster_sandbox`.

The sandbox kubelet is the runtime and `kovn-cni` the real plugin. With the agent stopped,
the kubelet's CNI DEL fails with "try again later" (11) while the pod's netns exists (its
attachment is live), and the deletion waits. Once the netns is gone DEL succeeds without
the agent, so the deletion completes while the agent is still down; what is left (the OVS
port, its veth destroyed with the netns) is removed by the agent when it starts.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from kube.client import KubeError
from node.plumbing import host_veth_name
from sandbox import procs, workloads
from sandbox.cluster import Sandbox
from sandbox.controlplane import eventually
from sandbox.netns import ip, netns_delete
from sandbox.node import SandboxNode, vsctl
from sandbox.podruntime import find_record
from tests.e2e.controlplane import Cluster, condition

pytestmark = pytest.mark.e2e

NS = "cni-del"


def ports_of(node: SandboxNode, container: str) -> list[str]:
    return vsctl(node, "--bare", "--columns=name", "find", "Interface",
                 f"external_ids:sandbox={container}").split()


def link_exists(node: SandboxNode, name: str) -> bool:
    return bool(ip("-o", "link", "show", "dev", name, netns=node.netns, check=False).strip())


def sleeper(node: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "doomed", "namespace": NS},
            "spec": {"nodeName": node, "containers": [
                {"name": "c", "image": "busybox", "args": ["sleep", "3600"]}]}}


def test_deletion_completes_with_the_agent_down_once_the_netns_is_gone(
        cluster_sandbox: Sandbox) -> None:
    cluster = Cluster(cluster_sandbox.kubeconfig)
    node = cluster_sandbox.nodes[0]
    cluster.namespace(NS)
    eventually(lambda: _exists(cluster, f"/api/v1/namespaces/{NS}/serviceaccounts/default"),
               what=f"ServiceAccount {NS}/default")
    cluster.create_pod(sleeper(node.name))
    eventually(lambda: condition(cluster.pod(NS, "doomed"), "Ready").get("status") == "True",
               60, "pod doomed Ready")
    record = find_record(cluster_sandbox.kubelet_states(), NS, "doomed")
    assert record is not None
    host_if = host_veth_name(record.container_id, record.ifname)
    assert ports_of(node, record.container_id) == [host_if] and link_exists(node, host_if)

    agent = procs.daemon_from_pidfile(node.dir / "agent.pid")
    assert agent is not None, "the node agent runs"
    log = node.dir / "kubelet.log"
    offset = log.stat().st_size
    try:
        procs.stop_daemons([agent], timeout=10)
        assert not workloads.agent_socket(node).exists()
        # Default grace period: the kubelet tears the pod down, then confirms the deletion.
        cluster.api.call("DELETE", f"/api/v1/namespaces/{NS}/pods/doomed")
        eventually(lambda: "pod cni-del/doomed: CNI DEL failed (attempt 2): the kovn node "
                   "agent is not reachable" in log.read_text()[offset:], 30,
                   "DEL refused (try again later) and retried while the netns exists")
        assert cluster.pod(NS, "doomed") is not None, "the deletion waits for the DEL"
        assert [e for e in cluster.events(NS, "doomed") if e["reason"] == "FailedKillPod"]

        netns_delete(record.netns)  # the sandbox is gone; its veth went with it
        t0 = time.monotonic()
        eventually(lambda: cluster.pod(NS, "doomed") is None, 30,
                   "deletion confirmed by the kubelet once the netns is gone")
        waited = time.monotonic() - t0
        assert not workloads.agent_socket(node).exists(), "the agent was down all along"
        assert find_record(cluster_sandbox.kubelet_states(), NS, "doomed") is None
        assert not link_exists(node, host_if)
        assert ports_of(node, record.container_id) == [host_if], "left for the agent"
    finally:
        cluster_sandbox.restart(f"{node.name}/agent")
        eventually(lambda: workloads.agent_ready(node), 60, f"{node.name}'s agent back")
    assert ports_of(node, record.container_id) == [], "the agent removed the stale port"
    agent_log = (node.dir / "agent.log").read_text()
    assert f"reconcile: removed {host_if}" in agent_log
    print(f"\ndeletion completed {waited:.1f}s after the netns went, agent still down")


def _exists(cluster: Cluster, path: str) -> bool:
    try:
        cluster.api.call("GET", path)
    except KubeError as exc:
        if exc.status == 404:
            return False
        raise
    return True
