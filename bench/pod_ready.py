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

    python -m bench.pod_ready [--pods 100] [--rate R] [--state-dir DIR]   (from the repo root)

Without --state-dir it brings up its own sandbox (prefix kvp) and takes it down afterwards;
with it, it uses that running sandbox (with its controller, agents and kubelets).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from contract.podnetwork import POD_NETWORK
from kube.client import KubeClient
from kube.listwatch import CallbackListener, ListWatch
from sandbox.cluster import Sandbox
from sandbox.config import SandboxConfig
from sandbox.metrics import endpoints
from sandbox.netns import netns_list
from sandbox.podstatus import pod_netns

RUN = str(int(time.time()))
NAMESPACE = f"bench-ready-{RUN}"


def pod(name: str) -> dict[str, Any]:
    labels = {"app": "bench-ready"}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "topologySpreadConstraints": [{
                "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": labels}}],
            "containers": [{"name": "c", "image": "kovn.io/serve-hostname",
                            "ports": [{"containerPort": 8080}]}],
        },
    }


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

    def __init__(self, api: KubeClient) -> None:
        self.ready: dict[str, float] = {}
        self.bound: dict[str, float] = {}  # first seen with a nodeName
        self.running: dict[str, float] = {}  # first seen with a podIP (the kubelet's report)
        self.annotated: dict[str, float] = {}  # first seen with the controller's annotation
        self.nodes: dict[str, str] = {}
        self.lock = threading.Lock()
        self.watch = ListWatch(api, f"/api/v1/namespaces/{NAMESPACE}/pods",
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


def cpu_snapshot(sandbox: Sandbox) -> dict[int, tuple[str, float, float]]:
    """pid -> (daemon, CPU seconds of its own, of its reaped children) for the sandbox's
    daemons: the kubelets' children are the CNI plugin and `ip` calls."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for daemon in Sandbox.load(sandbox.state_dir).status()["daemons"]:
        try:
            stat = Path(f"/proc/{daemon['pid']}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[daemon["pid"]] = (daemon["name"], (int(stat[11]) + int(stat[12])) / tick,
                              (int(stat[13]) + int(stat[14])) / tick)
    return out


def component(daemon: str) -> str:
    """Which share of the CPU a sandbox daemon's time counts in."""
    base = daemon.rsplit("/", 1)[-1]
    if base in ("agent", "kovn-controller"):
        return "kovn"
    if base.startswith(("kube-", "etcd")):
        return "kubernetes"
    if base.startswith(("ovn", "ovs", "northd", "nb", "sb")):
        return "ovn/ovs"
    return "harness"


def cpu_report(before: dict[int, tuple[str, float, float]],
               after: dict[int, tuple[str, float, float]], wall: float,
               pods: int, plugin: list[float]) -> str:
    """CPU per daemon and per component, per pod. The kubelets' children are the CNI plugin
    execs (their CPU is measured by the kubelet, see `add_attempts`): the plugin's share
    counts as kovn's, the rest of the kubelets' as the harness's."""
    rows = []
    for pid, (name, own, children) in after.items():
        _, own0, children0 = before.get(pid, (name, 0.0, 0.0))
        rows.append((own - own0 + children - children0, own - own0, children - children0, name))
    total = sum(r[0] for r in rows)
    shares = {"kovn": sum(plugin), "ovn/ovs": 0.0, "kubernetes": 0.0, "harness": -sum(plugin)}
    kovn = {"kovn-cni execs": sum(plugin), "node agents": 0.0, "controller": 0.0}
    for cpu, _, _, name in rows:
        shares[component(name)] += cpu
        if name.endswith("/agent"):
            kovn["node agents"] += cpu
        elif name == "kovn-controller":
            kovn["controller"] += cpu
    per_pod = 1000 / max(pods, 1)
    lines = [f"CPU from the first create to the last Ready: {total:.1f} s in {wall:.1f} s "
             f"(2 cores = {2 * wall:.1f} s available)"]
    for cpu, own, children, name in sorted(rows, reverse=True):
        if cpu >= 0.05:
            extra = f"  (itself {own:.2f}, children {children:.2f})" if children >= 0.05 else ""
            lines.append(f"  {cpu:6.2f} s  {name}{extra}")
    lines.append("CPU per pod by component:")
    for share, cpu in shares.items():
        lines.append(f"  {cpu * per_pod:7.1f} ms  {share}")
    lines.append(f"kovn CPU per pod: {shares['kovn'] * per_pod:.1f} ms (goal <= 25 ms): "
                 + ", ".join(f"{k} {v * per_pod:.1f} ms" for k, v in kovn.items()))
    if plugin:
        lines.append(f"kovn-cni CPU per exec: {1000 * statistics.mean(plugin):.1f} ms mean, "
                     f"{1000 * max(plugin):.1f} ms max over {len(plugin)} ADD execs "
                     "(goal <= 15 ms)")
    return "\n".join(lines)


def add_attempts(sandbox: Sandbox) -> tuple[list[float], list[str], list[float]]:
    """This run's CNI ADD attempts, from the kubelets' logs: the seconds of each successful
    one, the errors of the failed ones, and the plugin's CPU seconds of every one."""
    ok, errors, cpu = [], [], []
    for state in sandbox.kubelet_states():
        path = state / "cni-add.jsonl"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if not entry["pod"].startswith(NAMESPACE + "/"):
                continue
            cpu.append(entry.get("cpu", 0.0))
            if entry["error"]:
                errors.append(entry["error"])
            else:
                ok.append(entry["seconds"])
    return ok, errors, cpu


Totals = dict[Any, tuple[float, float]]
"""key -> (sum, count) of a histogram, or (value, 0) of a counter."""


def metric_totals(texts: Iterable[str], name: str,
                  key: Callable[[dict[str, str]], Any]) -> Totals:
    """Histogram `name`'s _sum and _count (or counter `name`'s _total), summed over the
    scraped `texts` per key(labels); a key of None leaves the sample out."""
    totals: dict[Any, list[float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name != name:
                continue
            for sample in family.samples:
                part = sample.name.removeprefix(name)
                if part in ("_sum", "_count", "_total") and \
                        (which := key(sample.labels)) is not None:
                    totals.setdefault(which, [0.0, 0.0])[part == "_count"] += sample.value
    return {which: (total, count) for which, (total, count) in totals.items()}


def agent_totals(sandbox: Sandbox) -> tuple[Totals, Totals]:
    """The agents' ADD phases (kovn_cni_add_phase_duration_seconds) and where ADDs found
    the network (kovn_cni_add_network_source_total), summed over the nodes."""
    texts = []
    for name, url in endpoints(sandbox.config).items():
        if name.endswith("/agent"):
            with urllib.request.urlopen(f"{url}/metrics", timeout=5) as answer:
                texts.append(answer.read().decode())
    return (metric_totals(texts, "kovn_cni_add_phase_duration_seconds",
                          lambda labels: labels["phase"]),
            metric_totals(texts, "kovn_cni_add_network_source",
                          lambda labels: labels["source"]))


def _minus(after: Totals, before: Totals) -> Totals:
    return {key: (total - before.get(key, (0.0, 0.0))[0], n - before.get(key, (0.0, 0.0))[1])
            for key, (total, n) in after.items()}


def phase_report(before: tuple[Totals, Totals], after: tuple[Totals, Totals]) -> str:
    """Mean seconds per successful ADD in each phase, for this run, and where the network
    came from."""
    phases, sources = _minus(after[0], before[0]), _minus(after[1], before[1])
    parts = [f"{phase} {total / n:.3f}s" for phase, (total, n) in phases.items() if n > 0]
    report = "  mean per ADD: " + ", ".join(parts) if parts else "  (no agent phase metrics)"
    came = ", ".join(f"{source} {total:.0f}" for source, (total, _) in sources.items())
    return report + (f"; the network came first from: {came}" if came else "")


def api_totals(api: KubeClient) -> Totals:
    """The API server's apiserver_request_duration_seconds per (verb, resource[/subresource]),
    summed over its other labels (watches left out)."""
    return metric_totals([api.get("/metrics")], "apiserver_request_duration_seconds",
                         lambda labels: None if labels["verb"] == "WATCH" else (
                             labels["verb"], "/".join(filter(None, (
                                 labels["resource"], labels.get("subresource"))))))


def api_report(before: Totals, after: Totals, count: int) -> str:
    """The requests this run made at least once per pod, by how long the API server took:
    under a burst they queue for its CPU, and each pod waits for several in turn."""
    runs = _minus(after, before)
    lines = [f"    {verb} {what}: {n:.0f}, mean {total / n * 1000:.0f} ms"
             for (verb, what), (total, n) in sorted(runs.items(), key=lambda kv: -kv[1][0])
             if n >= count]
    return "API server requests (at least one per pod), mean time in the server:\n" + \
        "\n".join(lines)


def run(sandbox: Sandbox, count: int, timeout: float, rate: float = 0) -> int:
    api = KubeClient(sandbox.kubeconfig, timeout=30)
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": NAMESPACE}})
    # The ServiceAccount admission plugin refuses pods until the namespace's default SA exists.
    deadline = time.monotonic() + 30
    while api.get_or_none(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default") is None:
        if time.monotonic() > deadline:
            raise SystemExit("no default ServiceAccount in the bench namespace after 30s")
        time.sleep(0.1)
    watch = ReadyWatch(api)
    created: dict[str, float] = {}
    posted: dict[str, float] = {}  # when the API server answered the POST
    netns: set[str] = set()  # of this run's pods

    def create(i: int) -> None:
        name = f"p{i:04d}"
        if rate:
            time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        created[name] = time.monotonic()
        made = api.create(f"/api/v1/namespaces/{NAMESPACE}/pods", pod(name))
        posted[name] = time.monotonic()
        netns.add(pod_netns(sandbox.config.prefix, NAMESPACE, name, made["metadata"]["uid"]))

    cpu_before = cpu_snapshot(sandbox)
    phases_before = agent_totals(sandbox)
    api_before = api_totals(api)
    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(count)))
    posting = time.monotonic() - t0
    while watch.count() < count:
        if time.monotonic() - t0 > timeout:
            print(f"only {watch.count()}/{count} pods Ready after {timeout:.0f}s", flush=True)
            break
        time.sleep(0.05)
    total = time.monotonic() - t0
    cpu_after = cpu_snapshot(sandbox)
    latencies = [watch.ready[n] - created[n] for n in created if n in watch.ready]
    adds, errors, plugin_cpu = add_attempts(sandbox)
    per_node: dict[str, int] = {}
    for node in watch.nodes.values():
        per_node[node] = per_node.get(node, 0) + 1
    spread = ", ".join(f"{n} {c}" for n, c in sorted(per_node.items()))
    how = f"at {rate:g}/s" if rate else "at once, 16 clients"
    print(f"{count} pods created in {posting:.2f}s ({how}), all Ready after {total:.2f}s; "
          f"spread: {spread}")
    print(f"creation -> Ready : {percentiles(latencies)}")
    for what, seen in (("POST answered", posted), ("annotated", watch.annotated),
                       ("bound", watch.bound), ("podIP", watch.running)):
        steps = [seen[n] - created[n] for n in created if n in seen]
        print(f"  creation -> {what:13s}: {percentiles(steps)}")
    after_bound = [watch.ready[n] - watch.bound[n] for n in created
                   if n in watch.ready and n in watch.bound]
    print(f"  bound -> Ready             : {percentiles(after_bound)}")
    print(f"CNI ADD           : {percentiles(adds)}")
    print(phase_report(phases_before, agent_totals(sandbox)))
    retried = [e for e in errors if e.startswith("code 11:")]
    print(f"CNI ADD failures  : {len(errors)} ({len(retried)} 'try again later', retried)")
    for error in sorted(set(errors) - set(retried))[:5]:
        print(f"  other failure: {error[:200]}")
    print(api_report(api_before, api_totals(api), count))
    print(cpu_report(cpu_before, cpu_after, total, count, plugin_cpu))
    t1 = time.monotonic()
    watch.watch.stop()
    api.delete(f"/api/v1/namespaces/{NAMESPACE}")
    while (left := len(netns & set(netns_list()))) and time.monotonic() - t1 < 120:
        time.sleep(0.2)
    print(f"namespace deleted: pod netns left after {time.monotonic() - t1:.1f}s: {left}")
    goal = (len(latencies) == count and len(adds) >= count
            and quantiles(latencies)[98] < 3.0 and quantiles(adds)[98] < 1.0)
    print(f"goals (ADD p99 < 1 s, Ready p99 < 3 s): {'met' if goal else 'NOT met'}")
    failed_hard = len(errors) - len(retried)
    return 0 if len(latencies) == count and not left and not failed_hard else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--rate", type=float, default=0,
                        help="create this many pods per second (default 0: all at once)")
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
        return run(sandbox, args.pods, args.timeout, args.rate)
    finally:
        if own:
            sandbox.down()


if __name__ == "__main__":
    sys.exit(main())
