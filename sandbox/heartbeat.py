"""Keep the sandbox's Node objects alive the way a kubelet does, without being one.

There is no kubelet in the sandbox yet, so this small daemon plays its part towards the API:
it registers each node (addresses, capacity, nodeInfo, Ready) and then renews the node's
Lease in kube-node-lease every 10 s and the Ready condition's lastHeartbeatTime every 40 s,
so the controller-manager's node lifecycle controller sees healthy nodes: it removes the
`node.kubernetes.io/not-ready` taint the API server may put on a new Node, and never
evicts. A Node deleted by someone is registered again, as a restarted kubelet would.

One more kubelet duty: a Pod bound to a node is only deleted once that node's kubelet
confirms it has stopped, so without one every deleted Pod would stay Terminating forever
(and namespace deletion with it). Pods never run here, so the heartbeat confirms at once:
it deletes terminating pods of its nodes with grace period 0 (checked every second).

    python -m sandbox.heartbeat --pidfile=P --kubeconfig K --node node1=203.0.113.11 ...

It is a daemon of the sandbox (see sandbox.kube) when pods do not run (no node agents and
kubelets); otherwise each node's sandbox kubelet (sandbox.kubelet) uses `Heartbeat` for its
own node, without the reaping, since it confirms deletions itself once a pod is torn down.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kube.client import STRATEGIC_MERGE_PATCH, KubeClient, KubeError, node_path, pod_path

LOG = logging.getLogger("kovn.sandbox.heartbeat")
LEASE_RENEW = 10.0  # kubelet: renewInterval = 0.25 * leaseDuration
REAP_INTERVAL = 1.0
LEASE_DURATION = 40  # kubelet default nodeLeaseDurationSeconds
STATUS_REFRESH = 40.0
LEASE_NAMESPACE = "kube-node-lease"
# pods: 250 (a kubelet's --max-pods, OpenShift's default) rather than the upstream 110: a
# rollout of 300 pods must fit on the sandbox's 2 nodes (bench/pod_ready.py --pods 300).
CAPACITY = {"cpu": "2", "memory": "8Gi", "pods": "250", "ephemeral-storage": "20Gi"}
# (type, status, reason, message) as a healthy kubelet reports them.
CONDITIONS = (
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kovn sandbox kubelet is posting ready status"),
)


def now() -> str:
    """A Kubernetes Time (seconds)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """A Kubernetes MicroTime, as Lease.spec.renewTime wants."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_manifest(name: str, ip: str, version: str) -> dict[str, Any]:
    """The Node a kubelet on sandbox node `name` with underlay address `ip` would register."""
    stamp = now()
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kovn.io/sandbox": "true",
            },
        },
        "spec": {},
        "status": {
            "capacity": dict(CAPACITY),
            "allocatable": dict(CAPACITY),
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": m,
                 "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}
                for t, s, r, m in CONDITIONS
            ],
            "addresses": [{"type": "InternalIP", "address": ip},
                          {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": f"kovn-sandbox-{name}",
                "systemUUID": f"kovn-sandbox-{name}",
                "bootID": f"kovn-sandbox-{name}",
                "kernelVersion": _kernel(),
                "osImage": "kovn sandbox",
                "containerRuntimeVersion": "kovn-sandbox://0.1.0",
                "kubeletVersion": version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def lease_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION,
                 "renewTime": now_micro()},
    }


class Heartbeat:
    """Registers `nodes` (name -> underlay IP) and keeps them Ready."""

    def __init__(self, api: KubeClient, nodes: Mapping[str, str]) -> None:
        self.api = api
        self.nodes = dict(nodes)
        self.version = str(api.get("/version").get("gitVersion", "v0.0.0"))

    def register(self, name: str) -> None:
        """Create the Node, or, if it exists (a restart), mark it Ready with fresh times."""
        try:
            self.api.create("/api/v1/nodes", node_manifest(name, self.nodes[name], self.version))
            LOG.info("registered node %s", name)
        except KubeError as exc:
            if exc.status != 409:
                raise
            self.post_status(name)

    def post_status(self, name: str) -> None:
        """Refresh lastHeartbeatTime of every condition (Ready=True); register if gone."""
        stamp = now()
        conditions = [{"type": t, "status": s, "reason": r, "message": m,
                       "lastHeartbeatTime": stamp} for t, s, r, m in CONDITIONS]
        try:
            self.api.patch(f"{node_path(name)}/status", {"status": {"conditions": conditions}},
                           STRATEGIC_MERGE_PATCH)
        except KubeError as exc:
            if exc.status != 404:
                raise
            self.register(name)

    def renew_lease(self, name: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{name}"
        lease = self.api.get_or_none(path)
        if lease is None:
            body = lease_manifest(name)
            node = self.api.get_or_none(node_path(name))
            if node is not None:  # as the kubelet does: the Node owns its Lease
                body["metadata"]["ownerReferences"] = [{
                    "apiVersion": "v1", "kind": "Node", "name": name,
                    "uid": node["metadata"]["uid"]}]
            self.api.create(path.rsplit("/", 1)[0], body)
            return
        lease["spec"].update(holderIdentity=name, leaseDurationSeconds=LEASE_DURATION,
                             renewTime=now_micro())
        self.api.put(path, lease)

    def reap_terminating(self) -> None:
        """Confirm the deletion of terminating pods bound to our nodes (grace period 0)."""
        pods = self.api.get("/api/v1/pods", {"resourceVersion": "0",
                                             "fieldSelector": "spec.nodeName!="})
        for pod in pods.get("items", []):
            meta = pod["metadata"]
            mine = pod["spec"].get("nodeName") in self.nodes and meta.get("deletionTimestamp")
            if mine and confirm_deletion(self.api, pod):
                LOG.info("deleted terminating pod %s/%s", meta["namespace"], meta["name"])

    def run(self, stop: list[bool], reap: bool = True) -> None:
        """Register every node, then beat until stop[0] is set; API errors are retried.

        `reap`: also confirm the deletion of terminating pods (only where no kubelet runs).
        """
        pending = set(self.nodes)
        next_status = next_lease = 0.0
        while not stop[0]:
            started = time.monotonic()
            beat = started >= next_lease or bool(pending)
            for name in self.nodes if beat else ():
                try:
                    if name in pending:
                        self.register(name)
                        pending.discard(name)
                    elif started >= next_status:
                        self.post_status(name)
                    self.renew_lease(name)
                except KubeError as exc:
                    LOG.warning("%s: %s (retrying)", name, exc)
            if beat:
                next_lease = started + LEASE_RENEW
            if beat and started >= next_status:
                next_status = started + STATUS_REFRESH
            if reap:
                try:
                    self.reap_terminating()
                except KubeError as exc:
                    LOG.warning("listing pods: %s (retrying)", exc)
            _sleep_until(started + (REAP_INTERVAL if reap or pending else LEASE_RENEW), stop)


def confirm_deletion(api: KubeClient, pod: dict[str, Any]) -> bool:
    """What a kubelet does once a terminating pod has stopped: delete it with grace period 0
    (this very pod: the uid precondition); False if it is already gone or was replaced."""
    meta = pod["metadata"]
    body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
            "preconditions": {"uid": meta["uid"]}}
    try:
        api.delete(pod_path(meta["namespace"], meta["name"]), missing_ok=False, body=body)
    except KubeError as exc:
        if exc.status not in (404, 409):
            raise
        return False
    return True


def _sleep_until(deadline: float, stop: list[bool]) -> None:
    while not stop[0] and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.5))


def _kernel() -> str:
    try:
        return Path("/proc/sys/kernel/osrelease").read_text().strip()
    except OSError:
        return ""


def parse_nodes(values: list[str]) -> dict[str, str]:
    nodes = {}
    for value in values:
        name, sep, ip = value.partition("=")
        if not sep or not name or not ip:
            raise argparse.ArgumentTypeError(f"--node wants NAME=IP, got {value!r}")
        nodes[name] = ip
    return nodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.heartbeat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--node", action="append", required=True, metavar="NAME=IP",
                        help="a node to keep Ready and its InternalIP (repeat per node)")
    parser.add_argument("--pidfile", type=Path,
                        help="written by the sandbox; identifies this process")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        nodes = parse_nodes(args.node)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    stop = [False]

    def on_signal(signum: int, _frame: object) -> None:
        LOG.info("signal %d: stopping", signum)
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    api = KubeClient(args.kubeconfig, pool_size=2, timeout=10)
    while not stop[0]:
        try:
            beat = Heartbeat(api, nodes)
            break
        except KubeError as exc:
            LOG.warning("API server not answering (%s); retrying", exc)
            _sleep_until(time.monotonic() + 1, stop)
    else:
        return 0
    LOG.info("keeping %s Ready (kubelet version %s)", ", ".join(nodes), beat.version)
    beat.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
