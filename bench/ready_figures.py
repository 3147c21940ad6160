"""The figures bench.pod_ready prints besides latencies: the CPU of each sandbox daemon and
component (read from /proc/<pid>/stat), the kubelets' CNI ADD log, the agents' ADD phases
and the API server's time per request (their Prometheus metrics)."""

from __future__ import annotations

import json
import os
import statistics
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kube.client import KubeClient
from sandbox.cluster import Sandbox
from sandbox.metrics import endpoints


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
    lines = [f"CPU from the first create to the last Ready (and annotation): {total:.1f} s in "
             f"{wall:.1f} s "
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


def add_attempts(sandbox: Sandbox,
                 namespace: str) -> tuple[list[float], list[str], list[float]]:
    """The CNI ADD attempts for pods of `namespace`, from the kubelets' logs: the seconds of
    each successful one, the errors of the failed ones, the plugin's CPU seconds of each."""
    ok, errors, cpu = [], [], []
    for state in sandbox.kubelet_states():
        path = state / "cni-add.jsonl"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if not entry["pod"].startswith(namespace + "/"):
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
