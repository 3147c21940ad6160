"""sandbox.podstatus: what the sandbox kubelet reads from a Pod and reports in its status."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox import podstatus
from sandbox.podstatus import PodFacts, Probe, build_status, readiness_probes, signature

NOW = "2026-01-01T00:00:10Z"
EARLIER = "2026-01-01T00:00:00Z"


def pod(containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web-1", "namespace": "demo", "uid": "u-1"},
            "spec": {"containers": containers, **spec}, "status": {}}


WEB = {"name": "web", "image": "agnhost:2.52",
       "ports": [{"name": "http", "containerPort": 8080},
                 {"containerPort": 8080, "protocol": "UDP"},
                 {"containerPort": 9000, "protocol": "SCTP"}]}
SIDECAR = {"name": "side", "image": "busybox", "ports": [{"containerPort": 8080}]}


def test_netns_names_are_short_unique_and_stable() -> None:
    a = podstatus.pod_netns("kovn", "demo", "web-1", "uid-a")
    assert a == podstatus.pod_netns("kovn", "demo", "web-1", "uid-a")
    assert a.startswith("kovn-p-") and len(a) == len("kovn-p-") + 10
    assert a != podstatus.pod_netns("kovn", "demo", "web-1", "uid-b")  # a new incarnation
    assert a != podstatus.pod_netns("kovn", "demo2", "web-1", "uid-a")
    cid = podstatus.container_id("uid-a")
    assert len(cid) == 64 and int(cid, 16) >= 0 and cid == podstatus.container_id("uid-a")


def test_declared_ports_of_all_containers_once() -> None:
    assert podstatus.declared_ports(pod([WEB, SIDECAR])) == [
        (8080, "TCP"), (8080, "UDP"), (9000, "SCTP")]
    assert podstatus.declared_ports(pod([{"name": "c"}])) == []


def test_readiness_probes_resolve_named_ports_and_defaults() -> None:
    web = {**WEB, "readinessProbe": {"tcpSocket": {"port": "http"}}}
    side = {**SIDECAR, "readinessProbe": {
        "httpGet": {"path": "/healthz", "port": 8080,
                    "httpHeaders": [{"name": "X-A", "value": "b"}]},
        "initialDelaySeconds": 2, "periodSeconds": 3, "timeoutSeconds": 4,
        "successThreshold": 2, "failureThreshold": 5}}
    other = {"name": "x", "readinessProbe": {"exec": {"command": ["true"]}}}
    assert readiness_probes(pod([web, side, other, {"name": "none"}])) == [
        Probe(container="web", kind="tcp", port=8080),
        Probe(container="side", kind="http", port=8080, path="/healthz",
              headers=(("X-A", "b"),), initial_delay=2, period=3, timeout=4,
              success_threshold=2, failure_threshold=5),
        Probe(container="x", kind="other"),
    ]
    with pytest.raises(ValueError, match="no port named 'nope'"):
        readiness_probes(pod([{**WEB, "readinessProbe": {"tcpSocket": {"port": "nope"}}}]))


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_running_and_ready() -> None:
    facts = PodFacts(node_ip="203.0.113.11", pod_ips=("10.16.0.5",), started_at=EARLIER,
                     container_id="c" * 64, ready={"web": True})
    status = build_status(pod([WEB]), facts, NOW)
    assert status["phase"] == "Running"
    assert (status["podIP"], status["podIPs"]) == ("10.16.0.5", [{"ip": "10.16.0.5"}])
    assert (status["hostIP"], status["hostIPs"]) == ("203.0.113.11", [{"ip": "203.0.113.11"}])
    assert status["startTime"] == EARLIER
    assert set(conditions(status).values()) == {"True"}
    assert set(conditions(status)) == {"PodScheduled", "PodReadyToStartContainers",
                                       "Initialized", "ContainersReady", "Ready"}
    (container,) = status["containerStatuses"]
    assert container["ready"] and container["started"] and container["restartCount"] == 0
    assert container["state"] == {"running": {"startedAt": EARLIER}}
    assert container["image"] == "agnhost:2.52"
    assert container["imageID"].startswith("agnhost:2.52@sha256:")
    assert container["containerID"].startswith("kovn-sandbox://")


def test_unready_container_and_readiness_gates() -> None:
    facts = PodFacts(node_ip="n", pod_ips=("10.16.0.5",), started_at=EARLIER,
                     ready={"web": True, "side": False})
    status = build_status(pod([WEB, SIDECAR]), facts, NOW)
    assert conditions(status)["ContainersReady"] == conditions(status)["Ready"] == "False"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["message"] == "containers with unready status: [side]"
    gated = pod([WEB], readinessGates=[{"conditionType": "example.com/lb"}])
    status = build_status(gated, PodFacts(node_ip="n", pod_ips=("1.2.3.4",),
                                          started_at=EARLIER, ready={"web": True}), NOW)
    assert conditions(status)["ContainersReady"] == "True"
    assert conditions(status)["Ready"] == "False"
    gated["status"]["conditions"] = [{"type": "example.com/lb", "status": "True"}]
    status = build_status(gated, PodFacts(node_ip="n", pod_ips=("1.2.3.4",),
                                          started_at=EARLIER, ready={"web": True}), NOW)
    assert conditions(status)["Ready"] == "True"


def test_sandbox_failure_keeps_the_pod_pending_with_the_reason() -> None:
    status = build_status(pod([WEB]), PodFacts(node_ip="n", sandbox_error="CNI said no"), NOW)
    assert status["phase"] == "Pending" and "podIP" not in status
    cond = next(c for c in status["conditions"] if c["type"] == "PodReadyToStartContainers")
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "False", "FailedCreatePodSandBox", "CNI said no")


def test_transition_times_kept_while_a_condition_holds() -> None:
    p = pod([WEB])
    p["status"]["conditions"] = [
        {"type": "Ready", "status": "True", "lastTransitionTime": EARLIER},
        {"type": "ContainersReady", "status": "False", "lastTransitionTime": EARLIER}]
    facts = PodFacts(node_ip="n", pod_ips=("1.2.3.4",), started_at=EARLIER,
                     ready={"web": True})
    times = {c["type"]: c["lastTransitionTime"]
             for c in build_status(p, facts, NOW)["conditions"]}
    assert times["Ready"] == EARLIER  # unchanged
    assert times["ContainersReady"] == NOW  # flipped now


def test_init_containers_reported_completed() -> None:
    p = pod([WEB], initContainers=[{"name": "init", "image": "busybox"}])
    status = build_status(p, PodFacts(node_ip="n", pod_ips=("1.2.3.4",), started_at=EARLIER,
                                      ready={"web": True}), NOW)
    (init,) = status["initContainerStatuses"]
    assert init["state"]["terminated"]["reason"] == "Completed" and init["ready"]


def test_signature_ignores_times_but_not_readiness() -> None:
    facts = PodFacts(node_ip="n", pod_ips=("1.2.3.4",), started_at=EARLIER,
                     ready={"web": True})
    a = build_status(pod([WEB]), facts, NOW)
    b = build_status(pod([WEB]), facts, "2030-01-01T00:00:00Z")
    assert signature(a) == signature(b)
    c = build_status(pod([WEB]), PodFacts(node_ip="n", pod_ips=("1.2.3.4",),
                                          started_at=EARLIER, ready={"web": False}), NOW)
    assert signature(a) != signature(c)
    assert signature({}) != signature(a)


# A pod without any containerPort (`kubectl run c --image=busybox -- sleep 3600`, or
# `kubectl create deployment b --image=agnhost` without --port) runs like any other.
BUSYBOX = {"name": "c", "image": "busybox", "args": ["sleep", "3600"]}


def test_a_pod_without_ports_runs_and_is_ready_once_started() -> None:
    portless = pod([BUSYBOX])
    assert podstatus.declared_ports(portless) == []
    assert readiness_probes(portless) == []
    pending = build_status(portless, PodFacts(node_ip="n", pod_ips=("10.16.0.9",)), NOW)
    assert pending["phase"] == "Pending"  # not started yet: network up is not enough
    facts = PodFacts(node_ip="n", pod_ips=("10.16.0.9",), started_at=EARLIER,
                     container_id="c" * 64, ready={"c": True})
    status = build_status(portless, facts, NOW)
    assert status["phase"] == "Running" and status["podIP"] == "10.16.0.9"
    assert set(conditions(status).values()) == {"True"}
    (container,) = status["containerStatuses"]
    assert container["ready"] and container["started"]
    assert container["state"] == {"running": {"startedAt": EARLIER}}
    assert signature(status) != signature(pending)


def test_a_pod_without_ports_follows_its_readiness_probe() -> None:
    probed = pod([{**BUSYBOX, "readinessProbe": {"exec": {"command": ["true"]}}}])
    assert readiness_probes(probed) == [Probe(container="c", kind="other")]
    unready = build_status(probed, PodFacts(node_ip="n", pod_ips=("10.16.0.9",),
                                            started_at=EARLIER, ready={"c": False}), NOW)
    assert unready["phase"] == "Running"
    assert conditions(unready)["Ready"] == conditions(unready)["ContainersReady"] == "False"
