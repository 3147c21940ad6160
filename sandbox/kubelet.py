"""The sandbox kubelet: runs the pods bound to one sandbox node, without containers.

One per node, a daemon of the sandbox. It keeps the Node registered and Ready (Lease and
Ready condition, sandbox.heartbeat), watches the Pods bound to its node and, for each:
creates a network namespace (host-network pods use the node's), calls the CNI plugin exactly
as a container runtime does (sandbox.cni), starts a server on every declared port inside the
pod's netns (sandbox.serve_hostname, in this process: no process per pod), runs the readiness
probes from the node's netns, and reports the pod status (Running, podIP, Ready). When a pod
is deleted it stops the servers, calls CNI DEL, deletes the netns and confirms the deletion.

    python -m sandbox.kubelet --node node1 --node-ip 203.0.113.11 --node-netns kovn-node1 \\
        --kubeconfig K --cni-conf F --cni-bin D --state D --prefix kovn [--pidfile P]

Pods are synced by a small pool of workers (sandbox.workqueue); the pod records in --state
let a restarted kubelet adopt its running pods without a second CNI ADD.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from kube.client import STRATEGIC_MERGE_PATCH, KubeClient, KubeError, pod_path
from kube.listwatch import CallbackListener, ListWatch
from sandbox import cni, podstatus, probe
from sandbox.heartbeat import Heartbeat, confirm_deletion
from sandbox.netns import netns_list
from sandbox.podruntime import PodRecord, PodStore, Runtime, RuntimeConfig, now
from sandbox.workqueue import Timer, WorkQueue

LOG = logging.getLogger("kovn.sandbox.kubelet")
COMPONENT = "kubelet"
WATCH_SECONDS = 300
RETRY_ERROR = 5.0  # after an unexpected error in a sync
RECONCILE_AFTER = 10.0  # seconds a status we patched is trusted over a pod not showing it


def retry_delay(error: cni.CniError, attempt: int) -> float:
    """Backoff before the next CNI attempt: quick for "try again later", slower otherwise."""
    if error.retry_soon:
        return min(0.2 * 2 ** (attempt - 1), 5.0)
    return min(1.0 * 2 ** (attempt - 1), 30.0)


class ProbeState:
    """Consecutive results of one readiness probe."""

    def __init__(self, spec: podstatus.Probe) -> None:
        self.spec = spec
        self.successes = 0
        self.failures = 0
        self.ready = False

    def record(self, ok: bool) -> bool:
        """Count a result; True if readiness changed."""
        before = self.ready
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= self.spec.success_threshold:
                self.ready = True
        else:
            self.successes, self.failures = 0, self.failures + 1
            if self.failures >= self.spec.failure_threshold:
                self.ready = False
        return self.ready != before


class Kubelet:
    def __init__(self, args: argparse.Namespace) -> None:
        self.node = args.node
        self.node_ip = args.node_ip
        self.node_netns = args.node_netns
        self.api = KubeClient(args.kubeconfig, pool_size=args.workers + 8, timeout=30)
        self.stop = [False]
        self.store = PodStore(args.state)
        self.runtime = Runtime(RuntimeConfig(
            node_netns=args.node_netns, node_ip=args.node_ip, prefix=args.prefix,
            cni_conf=args.cni_conf, cni_bin=args.cni_bin, dns_ip=args.dns_ip), self.store)
        self.lock = threading.Lock()
        self.pods: dict[str, dict[str, Any]] = {}  # uid -> latest Pod seen
        self.records: dict[str, PodRecord] = self.store.load_all()
        present = set(netns_list())
        # Adopted pods whose netns vanished (deleted by hand): torn down, then created again.
        self.broken = {uid for uid, r in self.records.items()
                       if not r.host_network and r.netns not in present}
        self.probes: dict[str, list[ProbeState]] = {}
        self.failures: dict[str, tuple[int, str]] = {}  # uid -> (attempts, last event)
        self.seen: dict[str, float] = {}  # uid -> when the watch first showed the pod
        # uid -> (signature, when) of the status last patched: see _report.
        self.reported: dict[str, tuple[tuple[Any, ...], float]] = {}
        self.timer = Timer("kubelet-timer")
        self.queue = WorkQueue(self._sync_safely, args.workers, self.timer, "kubelet-sync")
        self.probe_queue = WorkQueue(self._probe, 4, self.timer, "kubelet-probe")
        # The Pods bound to this node: listed, then watched (kovn's one list+watch loop).
        self.watch = ListWatch(self.api, "/api/v1/pods",
                               CallbackListener(self._listed, self._pod_event),
                               fields=f"spec.nodeName={self.node}", timeout=WATCH_SECONDS,
                               name=f"pods of {self.node}")

    # ------------------------------------------------------------------ watch

    def run(self) -> None:
        threading.Thread(target=self._heartbeat, name="kubelet-heartbeat", daemon=True).start()
        if self.records:
            LOG.info("adopting %d pod(s) from %s", len(self.records), self.store.dir)
        self.watch.run()  # lists first, resumes after errors, lists again after 410

    def _listed(self, items: list[dict[str, Any]]) -> None:
        """A whole snapshot: sync every pod in it, and every one we knew that is not."""
        pods = {p["metadata"]["uid"]: p for p in items}
        with self.lock:
            keys = set(self.pods) | set(pods) | set(self.records)
            self.pods = pods
            for uid in set(pods) - set(self.records):
                self.seen.setdefault(uid, time.monotonic())
        for uid in keys:
            self.queue.add(uid)

    def _pod_event(self, kind: str, obj: dict[str, Any]) -> None:
        uid = obj["metadata"]["uid"]
        with self.lock:
            if kind == "DELETED":
                self.pods.pop(uid, None)
            else:
                self.pods[uid] = obj
                if uid not in self.records:
                    self.seen.setdefault(uid, time.monotonic())
        self.queue.add(uid)

    def _heartbeat(self) -> None:
        while not self.stop[0]:
            try:
                beat = Heartbeat(self.api, {self.node: self.node_ip})
                break
            except KubeError as exc:
                LOG.warning("API server not answering (%s); retrying", exc)
                time.sleep(1)
        else:
            return
        beat.run(self.stop, reap=False)

    # ------------------------------------------------------------------ sync

    def _sync_safely(self, key: Hashable) -> None:
        try:
            self.sync(str(key))
        except Exception:
            LOG.exception("pod %s: sync failed; retrying in %.0fs", key, RETRY_ERROR)
            self.queue.add_after(key, RETRY_ERROR)

    def sync(self, uid: str) -> None:
        """Bring the pod `uid` to what the API says: running, or gone."""
        with self.lock:
            pod = self.pods.get(uid)
            record = self.records.get(uid)
        if record is not None and uid in self.broken:
            if not self._teardown(uid, record, pod):
                return
            self.broken.discard(uid)
            record = None
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            if record is not None and not self._teardown(uid, record, pod):
                return
            with self.lock:
                self.seen.pop(uid, None)
            if pod is not None:
                self._finalize(pod)
            return
        steps = [("queue", time.monotonic())]
        if record is None:
            record = self.runtime.sandbox(pod)
            with self.lock:
                self.records[uid] = record
            steps.append(("netns", time.monotonic()))
        if record.result is None and not record.host_network:
            try:
                self.runtime.add_network(record)
            except cni.CniError as exc:
                self._add_failed(pod, record, exc)
                return
            self.failures.pop(uid, None)
            with self.lock:
                latest = self.pods.get(uid)
            if latest is None or latest["metadata"].get("deletionTimestamp"):
                return  # deleted during the ADD: the queued sync tears it down
            pod = latest
            steps.append(("ADD", time.monotonic()))
        if self.runtime.started(uid):
            self._report(pod, record)
            return
        for problem in self.runtime.start_servers(record, pod):
            LOG.warning("pod %s: %s", record.key, problem)
        self._start_probes(uid, pod, record)
        steps.append(("servers", time.monotonic()))
        self._report(pod, record)
        steps.append(("status", time.monotonic()))
        with self.lock:
            seen = self.seen.pop(uid, steps[0][1])
        parts = [f"{name} {t - before:.3f}" for (name, t), (_, before)
                 in zip(steps, [("", seen), *steps], strict=False)]
        LOG.info("pod %s running with %s, %.3fs after the watch showed it (%s)", record.key,
                 ", ".join(record.pod_ips), steps[-1][1] - seen, ", ".join(parts))

    def _teardown(self, uid: str, record: PodRecord, pod: dict[str, Any] | None) -> bool:
        """Stop the pod and remove its network; False (retry scheduled) if CNI DEL failed."""
        try:
            self.runtime.remove(record)
        except cni.CniError as exc:
            attempts = self.failures.get(uid, (0, ""))[0] + 1
            self.failures[uid] = (attempts, "")
            LOG.warning("pod %s: CNI DEL failed (attempt %d): %s", record.key, attempts, exc)
            if pod is not None and attempts == 1:
                self._event(pod, "FailedKillPod", f"error killing pod: failed to destroy "
                            f"network for sandbox {record.container_id[:12]}: {exc}")
            self.queue.add_after(uid, retry_delay(exc, attempts))
            return False
        with self.lock:
            self.records.pop(uid, None)
            self.probes.pop(uid, None)
            self.reported.pop(uid, None)
        self.failures.pop(uid, None)
        LOG.info("pod %s: stopped, network removed", record.key)
        return True

    def _finalize(self, pod: dict[str, Any]) -> None:
        confirm_deletion(self.api, pod)

    def _add_failed(self, pod: dict[str, Any], record: PodRecord, exc: cni.CniError) -> None:
        attempts, last = self.failures.get(record.uid, (0, ""))
        attempts += 1
        message = (f"Failed to create pod sandbox: plugin type=\"kovn-cni\" failed (add): "
                   f"code {exc.code}: {exc}")
        delay = retry_delay(exc, attempts)
        LOG.warning("pod %s: CNI ADD failed (attempt %d, retry in %.1fs): %s", record.key,
                    attempts, delay, message)
        if message != last:
            self._event(pod, "FailedCreatePodSandBox", message)
        self.failures[record.uid] = (attempts, message)
        self._report(pod, record, sandbox_error=message)
        self.queue.add_after(record.uid, delay)

    def _report(self, pod: dict[str, Any], record: PodRecord, sandbox_error: str = "") -> None:
        """Patch pods/status if what we would report differs from what the API has."""
        facts = podstatus.PodFacts(
            node_ip=self.node_ip, pod_ips=tuple(record.pod_ips),
            started_at=record.started_at if self.runtime.started(record.uid) else "",
            container_id=record.container_id, ready=self._readiness(record.uid, pod),
            sandbox_error=sandbox_error)
        status = podstatus.build_status(pod, facts, now())
        wanted = podstatus.signature(status)
        if wanted == podstatus.signature(pod.get("status", {})):
            return
        # Like the kubelet's status manager: what we patched a moment ago is not patched
        # again because the pod in hand does not show it yet. Under a burst the watch
        # delivers the events of earlier writes (the controller's annotation) after our
        # PATCH's answer; comparing with those made a third of the pods patch twice. After
        # RECONCILE_AFTER the API's view wins again (the real kubelet reconciles every 10 s).
        last = self.reported.get(record.uid)
        if last is not None and last[0] == wanted and \
                time.monotonic() - last[1] < RECONCILE_AFTER:
            return
        meta = pod["metadata"]
        try:
            updated = self.api.patch(pod_path(meta["namespace"], meta["name"]) + "/status",
                                     {"status": status}, STRATEGIC_MERGE_PATCH)
        except KubeError as exc:
            if exc.status in (404, 409):
                return
            raise
        with self.lock:  # later syncs compare against what we wrote, until the watch tells
            self.reported[record.uid] = (wanted, time.monotonic())
            if record.uid in self.pods and isinstance(updated, dict):
                self.pods[record.uid] = updated

    def _event(self, pod: dict[str, Any], reason: str, message: str,
               kind: str = "Warning") -> None:
        self.api.event({"apiVersion": "v1", "kind": "Pod", **pod}, reason, message, kind,
                       component=COMPONENT, host=self.node)

    # ------------------------------------------------------------------ readiness

    def _readiness(self, uid: str, pod: dict[str, Any]) -> dict[str, bool]:
        with self.lock:
            states = {s.spec.container: s.ready for s in self.probes.get(uid, [])}
        return {c["name"]: states.get(c["name"], True)
                for c in pod.get("spec", {}).get("containers") or []}

    def _start_probes(self, uid: str, pod: dict[str, Any], record: PodRecord) -> None:
        try:
            specs = podstatus.readiness_probes(pod)
        except ValueError as exc:
            self._event(pod, "Unhealthy", f"Readiness probe errored: {exc}")
            # An unresolvable probe never succeeds: its container stays unready.
            states = [ProbeState(podstatus.Probe(container=c["name"], kind="never"))
                      for c in pod["spec"].get("containers") or [] if c.get("readinessProbe")]
            with self.lock:
                self.probes[uid] = states
            return
        states = [ProbeState(spec) for spec in specs]
        with self.lock:
            self.probes[uid] = states
        for index, state in enumerate(states):
            if state.spec.initial_delay == 0:
                self._probe_now(uid, record, state)  # the first answer goes in the first report
                self.timer.call_later(state.spec.period, lambda i=index:
                                      self.probe_queue.add((uid, i)))
            else:
                self.timer.call_later(state.spec.initial_delay, lambda i=index:
                                      self.probe_queue.add((uid, i)))

    def _probe(self, key: Hashable) -> None:
        uid, index = key  # type: ignore[misc]
        with self.lock:
            states = self.probes.get(uid)
            record = self.records.get(uid)
        if not states or record is None or self.stop[0]:
            return  # the pod is gone: its probes end
        state = states[index]
        if self._probe_now(uid, record, state):
            self.queue.add(uid)
        self.timer.call_later(state.spec.period, lambda: self.probe_queue.add(key))

    def _probe_now(self, uid: str, record: PodRecord, state: ProbeState) -> bool:
        spec = state.spec
        host = spec.host or (record.pod_ips[0] if record.pod_ips else "")
        if spec.kind == "tcp":
            ok = probe.tcp_open(self.node_netns, host, spec.port, spec.timeout)
        elif spec.kind == "http":
            code = probe.http_get(self.node_netns, host, spec.port, spec.path, spec.headers,
                                  spec.timeout)
            ok = code is not None and 200 <= code < 400
        else:
            ok = spec.kind == "other"  # exec/grpc cannot run here: treated as succeeding
        changed = state.record(ok)
        if changed:
            LOG.info("pod %s: container %s %s", record.key, spec.container,
                     "ready" if state.ready else "not ready")
        return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.kubelet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--node", required=True)
    parser.add_argument("--node-ip", required=True, help="the node's InternalIP (underlay)")
    parser.add_argument("--node-netns", required=True)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--cni-conf", type=Path, required=True, help="the CNI conflist")
    parser.add_argument("--cni-bin", type=Path, required=True, help="CNI_PATH")
    parser.add_argument("--state", type=Path, required=True, help="pod records and ADD log")
    parser.add_argument("--prefix", required=True, help="the sandbox's netns prefix")
    parser.add_argument("--dns-ip", default="", help="cluster DNS address written to each "
                        "pod's /etc/netns/<netns>/resolv.conf (none: not written)")
    # A real kubelet has a worker per pod. A CNI ADD mostly waits (for the controller's
    # annotation, for ovn-controller), so with 16 workers a rollout of 50 pods per node
    # queued here three ADDs deep: seconds of latency that were the harness's, not kovn's.
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--pidfile", type=Path,
                        help="written by the sandbox; identifies this process")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kubelet = Kubelet(args)
    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        LOG.info("signal %d: stopping (pods keep their network)", signum)
        kubelet.stop[0] = True
        kubelet.watch.stop()
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    LOG.info("kubelet for %s (%s, netns %s) starting", args.node, args.node_ip, args.node_netns)
    threading.Thread(target=kubelet.run, name="kubelet-watch", daemon=True).start()
    done.wait()
    logging.shutdown()
    # Workers may be inside a CNI call: do not wait for them. Records are written atomically.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
