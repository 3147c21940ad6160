"""What the sandbox kubelet reads from a Pod spec and writes into its status (pure functions).

A sandbox pod has no containers: its "containers" are servers answering on the declared
ports, and they are running as soon as the pod's network is plumbed and those servers are
started (a pod that declares no port has none, and runs all the same). The status says so in
the shape a kubelet gives it, so that EndpointSlices, Deployments and `kubectl get pods` see
ordinary running pods.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

RUNTIME = "kovn-sandbox"


def short_hash(*parts: str, length: int = 10) -> str:
    return hashlib.sha1("/".join(parts).encode()).hexdigest()[:length]


def pod_netns(prefix: str, namespace: str, name: str, uid: str) -> str:
    """`<prefix>-p-<hash>`: short (names are typed and listed), unique per pod incarnation."""
    return f"{prefix}-p-{short_hash(namespace, name, uid)}"


def container_id(uid: str) -> str:
    """The pod sandbox's id, as a runtime makes it: 64 hex digits, stable for the pod."""
    return hashlib.sha256(f"{RUNTIME}/{uid}".encode()).hexdigest()


def declared_ports(pod: dict[str, Any]) -> list[tuple[int, str]]:
    """(port, protocol) of every containerPort of every container, without duplicates."""
    seen: list[tuple[int, str]] = []
    for container in pod.get("spec", {}).get("containers") or []:
        for port in container.get("ports") or []:
            if "containerPort" not in port:
                continue
            entry = (int(port["containerPort"]), str(port.get("protocol") or "TCP").upper())
            if entry not in seen:
                seen.append(entry)
    return seen


@dataclass(frozen=True)
class Probe:
    """A readinessProbe, reduced to what the sandbox can run."""

    container: str
    kind: str  # "tcp", "http" or "other" (exec, grpc: treated as succeeding)
    port: int = 0
    path: str = "/"
    host: str = ""  # empty: the pod's IP
    headers: tuple[tuple[str, str], ...] = ()
    initial_delay: float = 0
    period: float = 10
    timeout: float = 1
    success_threshold: int = 1
    failure_threshold: int = 3


def _resolve_port(container: dict[str, Any], port: Any) -> int:
    """A probe's port: a number or the name of one of the container's ports."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"container {container.get('name')!r} has no port named {port!r}")


def readiness_probes(pod: dict[str, Any]) -> list[Probe]:
    """The readiness probes of the pod's containers; ValueError for an unresolvable port."""
    probes = []
    for container in pod.get("spec", {}).get("containers") or []:
        spec = container.get("readinessProbe")
        if not spec:
            continue
        common = {
            "container": container["name"],
            "initial_delay": float(spec.get("initialDelaySeconds") or 0),
            "period": float(spec.get("periodSeconds") or 10),
            "timeout": float(spec.get("timeoutSeconds") or 1),
            "success_threshold": int(spec.get("successThreshold") or 1),
            "failure_threshold": int(spec.get("failureThreshold") or 3),
        }
        if "tcpSocket" in spec:
            tcp = spec["tcpSocket"]
            probes.append(Probe(kind="tcp", port=_resolve_port(container, tcp.get("port")),
                                host=tcp.get("host") or "", **common))
        elif "httpGet" in spec:
            http = spec["httpGet"]
            headers = tuple((h["name"], h["value"]) for h in http.get("httpHeaders") or [])
            probes.append(Probe(kind="http", port=_resolve_port(container, http.get("port")),
                                path=http.get("path") or "/", host=http.get("host") or "",
                                headers=headers, **common))
        else:
            probes.append(Probe(kind="other", **common))
    return probes


@dataclass(frozen=True)
class PodFacts:
    """What the kubelet knows about a pod it runs (or failed to start)."""

    node_ip: str
    pod_ips: tuple[str, ...] = ()
    started_at: str = ""  # when the containers started (network up, servers, maybe none,
    # listening); empty while they are not
    container_id: str = ""
    ready: dict[str, bool] = field(default_factory=dict)  # container -> readiness
    sandbox_error: str = ""  # why the pod's network could not be set up (yet)


def _conditions(pod: dict[str, Any], wanted: dict[str, tuple[str, str, str]],
                now: str) -> list[dict[str, Any]]:
    """Conditions with lastTransitionTime kept where the status did not change."""
    current = {c.get("type"): c for c in pod.get("status", {}).get("conditions") or []}
    out = []
    for kind, (status, reason, message) in wanted.items():
        old = current.get(kind, {})
        cond: dict[str, Any] = {"type": kind, "status": status,
                                "lastTransitionTime": (old.get("lastTransitionTime") or now)
                                if old.get("status") == status else now,
                                "lastProbeTime": None}
        cond["reason"] = reason or None
        cond["message"] = message or None
        out.append(cond)
    return out


def _gates_met(pod: dict[str, Any]) -> bool:
    gates = [g.get("conditionType") for g in pod.get("spec", {}).get("readinessGates") or []]
    conds = {c.get("type"): c.get("status")
             for c in pod.get("status", {}).get("conditions") or []}
    return all(conds.get(g) == "True" for g in gates)


def build_status(pod: dict[str, Any], facts: PodFacts, now: str) -> dict[str, Any]:
    """The pod status a kubelet would report for these facts."""
    spec = pod.get("spec", {})
    status: dict[str, Any] = {"hostIP": facts.node_ip, "hostIPs": [{"ip": facts.node_ip}]}
    if not facts.started_at:
        problem = facts.sandbox_error
        status["phase"] = "Pending"
        status["conditions"] = _conditions(pod, {
            "PodScheduled": ("True", "", ""),
            "PodReadyToStartContainers": ("False", "FailedCreatePodSandBox" if problem else "",
                                          problem),
            "Initialized": ("True", "", ""),
            "ContainersReady": ("False", "ContainersNotReady", "containers not started"),
            "Ready": ("False", "ContainersNotReady", "containers not started"),
        }, now)
        return status
    names = [c["name"] for c in spec.get("containers") or []]
    unready = [n for n in names if not facts.ready.get(n, False)]
    if unready:
        ready = ("False", "ContainersNotReady",
                 f"containers with unready status: [{' '.join(unready)}]")
        pod_ready = ready
    else:
        ready = ("True", "", "")
        pod_ready = ready if _gates_met(pod) else \
            ("False", "ReadinessGatesNotReady", "readiness gates not met")
    status.update({
        "phase": "Running",
        "startTime": pod.get("status", {}).get("startTime") or facts.started_at,
        "podIP": facts.pod_ips[0] if facts.pod_ips else "",
        "podIPs": [{"ip": ip} for ip in facts.pod_ips],
        "conditions": _conditions(pod, {
            "PodScheduled": ("True", "", ""),
            "PodReadyToStartContainers": ("True", "", ""),
            "Initialized": ("True", "", ""),
            "ContainersReady": ready,
            "Ready": pod_ready,
        }, now),
        "containerStatuses": [_container_status(c, facts) for c in spec.get("containers") or []],
    })
    if spec.get("initContainers"):
        status["initContainerStatuses"] = [
            {**_container_status(c, facts, ready=True),
             "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                      "startedAt": facts.started_at,
                                      "finishedAt": facts.started_at,
                                      "containerID": _cid(facts, c["name"])}},
             "started": False}
            for c in spec["initContainers"]]
    return status


def _cid(facts: PodFacts, name: str) -> str:
    return f"{RUNTIME}://{hashlib.sha256(f'{facts.container_id}/{name}'.encode()).hexdigest()}"


def _container_status(container: dict[str, Any], facts: PodFacts,
                      ready: bool | None = None) -> dict[str, Any]:
    image = container.get("image") or ""
    return {
        "name": container["name"],
        "image": image,
        "imageID": f"{image.split('@')[0]}@sha256:{hashlib.sha256(image.encode()).hexdigest()}",
        "containerID": _cid(facts, container["name"]),
        "ready": facts.ready.get(container["name"], False) if ready is None else ready,
        "started": True,
        "restartCount": 0,
        "state": {"running": {"startedAt": facts.started_at}},
    }


def signature(status: dict[str, Any]) -> tuple[Any, ...]:
    """What must match for a reported status to need no new patch."""
    conds = tuple(sorted((c.get("type"), c.get("status"), c.get("message") or "")
                         for c in status.get("conditions") or []))
    containers = tuple(sorted((c.get("name"), bool(c.get("ready")), "running" in
                               (c.get("state") or {}), c.get("containerID"))
                              for c in status.get("containerStatuses") or []))
    return (status.get("phase"), status.get("podIP") or "", status.get("hostIP") or "",
            conds, containers)

