"""Benchmark: pods from creation to Ready on the sandbox, and the CNI ADD inside that.

N pods (default 100, one TCP port each) are created at once with 16 client threads (or at
--rate pods per second) and spread over the nodes; a watch timestamps each pod locally when
its Ready condition turns True (the API's timestamps have whole seconds only). Creation ->
Ready runs from just before the pod's POST; CNI ADD is what the sandbox kubelets measured
around each plugin exec (their `cni-add.jsonl`). Prints p50/p90/p99 of both, the CNI failures
(only "try again later" ones, retried by the kubelet, are expected), the steps in between
(POST answered, annotated by the controller, bound by the scheduler, podIP), the mean of each
phase of an ADD (the agents' metrics: waiting for the annotation, veth, OVS port,
ovn-installed), how long the API server took for each request every pod needs (under a burst
they queue for its CPU), and the CPU each pod
cost: per daemon (read from /proc/<pid>/stat), and per component: kovn's own (the kovn-cni
execs, measured by the kubelets with wait4; the node agents; the controller), OVN/OVS,
the Kubernetes control plane and the sandbox harness (kubelets, relays). Goal: kovn's own
CPU per pod <= 25 ms, kovn-cni <= 15 ms per exec. Then it deletes the pods and checks that
no netns is left. Goals: CNI ADD p99 < 1 s, creation -> Ready p99 < 3 s
on 2 cores.

With --baseline the same pods are first created with hostNetwork (no CNI, no OVN port, nothing
of kovn's): what Kubernetes and the harness alone take on this machine. Both rounds' Ready
latencies are then printed side by side, and what the pod network adds.

    python -m bench.pod_ready [--pods 100] [--rate R] [--baseline] [--state-dir DIR]

Without --state-dir it brings up its own sandbox (prefix kvp) and takes it down afterwards;
with it, it uses that running sandbox (with its controller, agents and kubelets).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ready_figures import (
    add_attempts,
    agent_totals,
    api_report,
    api_totals,
    cpu_report,
    cpu_snapshot,
    phase_report,
)
from contract.podnetwork import POD_NETWORK
from kube.client import KubeClient
from kube.listwatch import CallbackListener, ListWatch
from sandbox.cluster import Sandbox
from sandbox.config import SandboxConfig
from sandbox.netns import netns_list
from sandbox.podstatus import pod_netns

RUN = str(int(time.time()))


def pod(name: str, namespace: str, host_network: bool = False) -> dict[str, Any]:
    """A bench pod; a host-network one declares no port (its node's pods would all want it)."""
    labels = {"app": "bench-ready"}
    container: dict[str, Any] = {"name": "c", "image": "kovn.io/serve-hostname"}
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 0,
        "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": labels}}],
        "containers": [container],
    }
    if host_network:
        spec["hostNetwork"] = True
    else:
        container["ports"] = [{"containerPort": 8080}]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels}, "spec": spec}


def quantiles(values: list[float]) -> list[float]:
    """The 99 percentiles (p1..p99) of values, interpolated between samples."""
    if len(values) < 2:
        return [values[0] if values else float("nan")] * 99
    return statistics.quantiles(values, n=100, method="inclusive")


def percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    qs = quantiles(values)
    return (f"p50 {qs[49]:.3f}s  p90 {qs[89]:.3f}s  p99 {qs[98]:.3f}s  "
            f"max {max(values):.3f}s  (n={len(values)})")


class ReadyWatch:
    """Local time at which each pod of the namespace was first seen Ready."""

    def __init__(self, api: KubeClient, namespace: str) -> None:
        self.ready: dict[str, float] = {}
        self.bound: dict[str, float] = {}  # first seen with a nodeName
        self.running: dict[str, float] = {}  # first seen with a podIP (the kubelet's report)
        self.annotated: dict[str, float] = {}  # first seen with the controller's annotation
        self.nodes: dict[str, str] = {}
        self.lock = threading.Lock()
        self.watch = ListWatch(api, f"/api/v1/namespaces/{namespace}/pods",
                               CallbackListener(self._listed, self._event), timeout=600,
                               name="bench pods")
        self.watch.start()  # lists first (on this thread), then watches on its own

    def _listed(self, items: list[dict[str, Any]]) -> None:
        for obj in items:
            self._see(obj)

    def _event(self, kind: str, obj: dict[str, Any]) -> None:
        if kind in ("ADDED", "MODIFIED"):
            self._see(obj)

    def _see(self, obj: dict[str, Any]) -> None:
        conds = {c["type"]: c["status"] for c in obj.get("status", {}).get("conditions") or []}
        name = obj["metadata"]["name"]
        with self.lock:
            if obj["spec"].get("nodeName"):
                self.nodes[name] = obj["spec"]["nodeName"]
                self.bound.setdefault(name, time.monotonic())
            if POD_NETWORK in (obj["metadata"].get("annotations") or {}):
                self.annotated.setdefault(name, time.monotonic())
            if obj.get("status", {}).get("podIP"):
                self.running.setdefault(name, time.monotonic())
            if conds.get("Ready") == "True" and name not in self.ready:
                self.ready[name] = time.monotonic()

    def count(self) -> int:
        with self.lock:
            return len(self.ready)

    def annotated_count(self) -> int:
        with self.lock:
            return len(self.annotated)


def wait_until(done: Callable[[], bool], deadline: float) -> bool:
    """Poll `done` every 50 ms until it holds (True) or the deadline passes (False)."""
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@dataclass
class Round:
    """One round's outcome: its exit status and each pod's creation -> Ready."""

    status: int
    latencies: list[float]


def run(sandbox: Sandbox, count: int, timeout: float, rate: float = 0,
        host_network: bool = False) -> Round:
    namespace = f"bench-ready-{RUN}" + ("-host" if host_network else "")
    api = KubeClient(sandbox.kubeconfig, timeout=30)
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": namespace}})
    # The ServiceAccount admission plugin refuses pods until the namespace's default SA exists.
    deadline = time.monotonic() + 30
    while api.get_or_none(f"/api/v1/namespaces/{namespace}/serviceaccounts/default") is None:
        if time.monotonic() > deadline:
            raise SystemExit("no default ServiceAccount in the bench namespace after 30s")
        time.sleep(0.1)
    watch = ReadyWatch(api, namespace)
    created: dict[str, float] = {}
    posted: dict[str, float] = {}  # when the API server answered the POST
    netns: set[str] = set()  # of this run's pods

    def create(i: int) -> None:
        name = f"p{i:04d}"
        if rate:
            time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        created[name] = time.monotonic()
        made = api.create(f"/api/v1/namespaces/{namespace}/pods",
                          pod(name, namespace, host_network))
        posted[name] = time.monotonic()
        if not host_network:
            netns.add(pod_netns(sandbox.config.prefix, namespace, name,
                                made["metadata"]["uid"]))

    cpu_before = cpu_snapshot(sandbox)
    phases_before = agent_totals(sandbox)
    api_before = api_totals(api)
    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(count)))
    posting = time.monotonic() - t0
    if not wait_until(lambda: watch.count() >= count, t0 + timeout):
        print(f"only {watch.count()}/{count} pods Ready after {timeout:.0f}s", flush=True)
    total = time.monotonic() - t0
    # The ADD does not wait for the controller's annotation (it reads the Port_Binding), so
    # the last may come after the last Ready: the CPU they cost counts too.
    if not host_network:
        wait_until(lambda: watch.annotated_count() >= count, t0 + timeout)
    measured = time.monotonic() - t0
    cpu_after = cpu_snapshot(sandbox)
    latencies = [watch.ready[n] - created[n] for n in created if n in watch.ready]
    adds, errors, plugin_cpu = add_attempts(sandbox, namespace)
    per_node: dict[str, int] = {}
    for node in watch.nodes.values():
        per_node[node] = per_node.get(node, 0) + 1
    spread = ", ".join(f"{n} {c}" for n, c in sorted(per_node.items()))
    how = f"at {rate:g}/s" if rate else "at once, 16 clients"
    what = "host-network pods (the baseline: nothing of kovn's)" if host_network else "pods"
    annotated = "" if host_network else f", annotated after {measured:.2f}s"
    print(f"{count} {what} created in {posting:.2f}s ({how}), all Ready after {total:.2f}s"
          f"{annotated}; spread: {spread}")
    print(f"creation -> Ready : {percentiles(latencies)}")
    for step, seen, shown in (("POST answered", posted, True),
                              ("annotated", watch.annotated, not host_network),
                              ("bound", watch.bound, True),
                              ("podIP", watch.running, not host_network)):
        if not shown:
            continue
        steps = [seen[n] - created[n] for n in created if n in seen]
        print(f"  creation -> {step:13s}: {percentiles(steps)}")
    after_bound = [watch.ready[n] - watch.bound[n] for n in created
                   if n in watch.ready and n in watch.bound]
    print(f"  bound -> Ready             : {percentiles(after_bound)}")
    retried = [e for e in errors if e.startswith("code 11:")]
    if not host_network:
        print(f"CNI ADD           : {percentiles(adds)}")
        print(phase_report(phases_before, agent_totals(sandbox)))
        print(f"CNI ADD failures  : {len(errors)} ({len(retried)} 'try again later', retried)")
        for error in sorted(set(errors) - set(retried))[:5]:
            print(f"  other failure: {error[:200]}")
    print(api_report(api_before, api_totals(api), count))
    print(cpu_report(cpu_before, cpu_after, measured, count, plugin_cpu))
    t1 = time.monotonic()
    watch.watch.stop()
    api.delete(f"/api/v1/namespaces/{namespace}")
    # Until the pods are gone (and, with a pod network, their netns): a next round must
    # not share the CPU with this one's deletions.
    while time.monotonic() - t1 < 120:
        left = len(netns & set(netns_list()))
        pods = api.get(f"/api/v1/namespaces/{namespace}/pods").get("items", [])
        if not left and not pods:
            break
        time.sleep(0.2)
    print(f"namespace deleted: pod netns left after {time.monotonic() - t1:.1f}s: {left}")
    if not host_network:
        goal = (len(latencies) == count and len(adds) >= count
                and quantiles(latencies)[98] < 3.0 and quantiles(adds)[98] < 1.0)
        print(f"goals (ADD p99 < 1 s, Ready p99 < 3 s): {'met' if goal else 'NOT met'}")
    failed_hard = len(errors) - len(retried)
    ok = len(latencies) == count and not left and not failed_hard
    return Round(0 if ok else 1, latencies)


def compare(baseline: list[float], network: list[float]) -> str:
    """Both rounds' Ready latencies side by side: what the pod network adds to each."""
    if not baseline or not network:
        return "no comparison: a round has no Ready pod"
    b, n = quantiles(baseline), quantiles(network)
    parts = [f"{name} {n[i]:.2f} s vs {b[i]:.2f} s (+{n[i] - b[i]:.2f} s, x{n[i] / b[i]:.2f})"
             for name, i in (("p50", 49), ("p90", 89), ("p99", 98))]
    return "creation -> Ready, pod network vs host network: " + "; ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--rate", type=float, default=0,
                        help="create this many pods per second (default 0: all at once)")
    parser.add_argument("--baseline", action="store_true",
                        help="first the same pods with hostNetwork: Kubernetes alone")
    parser.add_argument("--state-dir", type=Path, help="use this running sandbox")
    args = parser.parse_args()
    own = args.state_dir is None
    if own:
        state_dir = Path(tempfile.mkdtemp(prefix="kovn-bench-ready-"))
        sandbox = Sandbox(SandboxConfig(state_dir=state_dir, prefix="kvp", nb_tcp_port=None,
                                        apiserver_port=0, etcd_port=0, etcd_peer_port=0))
        t0 = time.monotonic()
        sandbox.up(progress=lambda line: print(f"  {line}", flush=True))
        print(f"sandbox up in {time.monotonic() - t0:.1f}s", flush=True)
    else:
        sandbox = Sandbox.load(args.state_dir)
    try:
        baseline = None
        if args.baseline:
            baseline = run(sandbox, args.pods, args.timeout, args.rate, host_network=True)
            print(flush=True)
        network = run(sandbox, args.pods, args.timeout, args.rate)
        if baseline is not None:
            print(compare(baseline.latencies, network.latencies))
        return max(network.status, baseline.status if baseline else 0)
    finally:
        if own:
            sandbox.down()


if __name__ == "__main__":
    sys.exit(main())
