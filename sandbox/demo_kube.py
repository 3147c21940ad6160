"""The demo on a sandbox with Kubernetes: an ordinary Deployment, real pods, real packets.

`kovn sandbox demo` applies manifests/examples/demo.yaml (4 replicas serving TCP 8080 spread
over the nodes), waits until the pods are Ready (the sandbox kubelets ran the CNI plugin and
the readiness probes), then measures from inside every pod's network namespace: ping and TCP
to every other pod (the server answers with its name and the client address it saw, so NAT
would show), and from every node's own namespace to its pods. It prints the pods, the
matrix and `kovn show`. Then every pod reaches the outside namespace's server (the internet
beyond the gateway routers), which answers with the source it saw: the pod's own node's
external IP, since the default Subnet has natOutgoing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kube.client import KubeClient
from sandbox import kube, outside
from sandbox.cluster import Sandbox
from sandbox.podruntime import find_record
from sandbox.probe import ping, probe

MANIFEST = kube.REPO / "manifests" / "examples" / "demo.yaml"
NAMESPACE, DEPLOYMENT, PORT = "demo", "web", 8080
# kind -> (API prefix, plural, namespaced) for what example manifests contain.
KINDS = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Service": ("/api/v1", "services", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Pod": ("/api/v1", "pods", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "DaemonSet": ("/apis/apps/v1", "daemonsets", True),
    "Subnet": ("/apis/kovn.io/v1", "subnets", False),
}


def object_path(doc: dict[str, Any]) -> str:
    prefix, plural, namespaced = KINDS[doc["kind"]]
    meta = doc["metadata"]
    where = f"/namespaces/{meta.get('namespace', 'default')}" if namespaced else ""
    return f"{prefix}{where}/{plural}/{meta['name']}"


def apply_file(api: KubeClient, path: Path) -> list[str]:
    """Server-side apply every object of a YAML file; `Kind ns/name` of each."""
    applied = []
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        api.apply(object_path(doc), doc, kube.FIELD_MANAGER)
        meta = doc["metadata"]
        name = f"{meta['namespace']}/{meta['name']}" if "namespace" in meta else meta["name"]
        applied.append(f"{doc['kind']} {name}")
    return applied


@dataclass(frozen=True)
class DemoPod:
    name: str
    ip: str
    node: str
    netns: str

    @property
    def label(self) -> str:
        return self.name.rsplit("-", 1)[-1]


def ready_pods(api: KubeClient, replicas: int) -> list[dict[str, Any]] | None:
    """The Deployment's pods once `replicas` of them are Ready and none is terminating."""
    items = list(api.list(f"/api/v1/namespaces/{NAMESPACE}/pods", selector=f"app={DEPLOYMENT}"))
    if len(items) != replicas or any(p["metadata"].get("deletionTimestamp") for p in items):
        return None
    for pod in items:
        conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions") or []}
        if conds.get("Ready") != "True":
            return None
    return items


@dataclass(frozen=True)
class Reach:
    src: str
    dst: str
    ping: bool
    tcp: str | None  # what answered: "<pod name> <client ip it saw>"

    def ok(self, client_ip: str) -> bool:
        return self.ping and bool(self.tcp) and (self.tcp or "").split()[-1] == client_ip


def measure(pods: list[DemoPod], nodes: dict[str, str]) -> list[Reach]:
    """Every pod to every other pod, and every node (name -> netns) to its own pods."""
    def one(job: tuple[str, str, str]) -> Reach:
        src, netns, ip = job
        return Reach(src, ip, ping(netns, ip, count=2), probe(netns, ip, PORT))

    jobs = [(s.name, s.netns, d.ip) for s in pods for d in pods if s is not d]
    jobs += [(node, netns, p.ip) for node, netns in nodes.items() for p in pods
             if p.node == node]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, jobs))


def format_matrix(pods: list[DemoPod], nodes: list[str], results: list[Reach]) -> str:
    by_pair = {(r.src, r.dst): r for r in results}
    width = max(10, *(len(p.label) + 2 for p in pods))
    lines = ["from \\ to".ljust(12) + "".join(p.label.ljust(width) for p in pods)]
    for src, label in [(p.name, p.label) for p in pods] + [(n, n) for n in nodes]:
        cells = []
        for dst in pods:
            r = by_pair.get((src, dst.ip))
            if r is None:
                cells.append("-".ljust(width))
                continue
            cells.append((("ping " if r.ping else "---- ") + ("tcp" if r.tcp else "---"))
                         .ljust(width))
        lines.append(label.ljust(12) + "".join(cells))
    return "\n".join(lines)


def run_kube_demo(sandbox: Sandbox, out: Callable[[str], None] = print,
                  timeout: float = 120) -> int:
    """Apply the example, wait for Ready pods, measure, print; 0 if every path works."""
    from northbound.connection import NbConnection
    from northbound.show import show_text

    api = KubeClient(sandbox.kubeconfig, pool_size=2, timeout=10)
    replicas = 0
    for doc in yaml.safe_load_all(MANIFEST.read_text()):
        if doc and doc["kind"] == "Deployment":
            replicas = int(doc["spec"]["replicas"])
    t0 = time.monotonic()
    out(f"applied {', '.join(apply_file(api, MANIFEST))} ({MANIFEST.relative_to(kube.REPO)})")
    while (items := ready_pods(api, replicas)) is None:
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{replicas} pods of {NAMESPACE}/{DEPLOYMENT} not Ready within "
                               f"{timeout:.0f}s; see the kubelet.log and agent.log of each node "
                               f"in {sandbox.state_dir}")
        time.sleep(0.2)
    out(f"{replicas} pods Ready {time.monotonic() - t0:.1f}s after apply:")
    states = sandbox.kubelet_states()
    pods = []
    for item in sorted(items, key=lambda p: (p["spec"]["nodeName"], p["metadata"]["name"])):
        name = item["metadata"]["name"]
        record = find_record(states, NAMESPACE, name)
        if record is None:
            raise TimeoutError(f"pod {NAMESPACE}/{name} is Ready but no kubelet runs it")
        pods.append(DemoPod(name, item["status"]["podIP"], item["spec"]["nodeName"],
                            record.netns))
        out(f"  {name:<28} {pods[-1].ip:<14} {pods[-1].node}")
    nodes = {n.name: n.netns for n in sandbox.nodes if any(p.node == n.name for p in pods)}
    started = time.monotonic()
    results = measure(pods, nodes)
    out(f"\nconnectivity, measured with real packets in {time.monotonic() - started:.1f}s "
        f"(ping = ICMP echo; tcp = the pod's server answered on :{PORT}; rows are pods by "
        "name suffix, then each node's own namespace to the pods it runs):")
    out(format_matrix(pods, list(nodes), results))
    egress = measure_egress(sandbox, pods)
    with NbConnection(sandbox.nb_remote) as nb:
        out("\nkovn show:\n" + show_text(nb))
    ip_of = {p.name: p.ip for p in pods}
    pod_pairs = [r for r in results if r.src in ip_of]
    pod_ok = sum(r.ok(ip_of[r.src]) for r in pod_pairs)
    node_paths = [r for r in results if r.src not in ip_of]
    node_ok = sum(r.ping and bool(r.tcp) for r in node_paths)
    out(f"\n{pod_ok}/{len(pod_pairs)} pod pairs reach each other (ping and TCP, the server "
        f"saw the client's pod IP: no NAT); {node_ok}/{len(node_paths)} node -> own pod paths")
    external = {n.name: n.external_ip for n in sandbox.nodes}
    egress_ok = sum(seen == external[p.node] for p, seen in egress)
    out(f"{egress_ok}/{len(pods)} pods reach the outside {sandbox.config.outside_gateway} as "
        f"their own node's external IP (" + ", ".join(
            f"{p.label}: {seen or 'no answer'}" for p, seen in egress) + ")")
    out(f"explore: kovn sandbox exec {NAMESPACE}/{pods[0].name} -- ping -c1 {pods[-1].ip}; "
        f"kovn sandbox exec outside -- ping -c1 {sandbox.nodes[0].external_ip}")
    return 0 if pod_ok == len(pod_pairs) and node_ok == len(node_paths) and \
        egress_ok == len(pods) else 1


def measure_egress(sandbox: Sandbox, pods: list[DemoPod]) -> list[tuple[DemoPod, str | None]]:
    """Each pod to the outside's server: the source address it saw (None: no answer)."""
    def one(pod: DemoPod) -> tuple[DemoPod, str | None]:
        answer = probe(pod.netns, sandbox.config.outside_gateway, outside.SERVER_PORT)
        return pod, answer.split()[-1] if answer else None

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, pods))
