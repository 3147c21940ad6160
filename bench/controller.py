"""Benchmark: the controller against the real control plane.

(a) N pods created across 20 namespaces and 50 Node objects: time from the first create until
    every pod is annotated and has its logical switch port -> pods/s.
(b) the controller restarted with all of them present: time until it has fully reconciled.
Then the raw NB ratio of the Foundation bench (bench/nb_apply.py) for the same port count.

    python -m bench.controller [--pods 2000] [--state-dir DIR]     (from the repo root)

Without --state-dir it brings up its own sandbox (prefix kvb) and takes it down afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import nb_apply
from contract.podnetwork import POD_NETWORK
from kube.client import KubeClient, KubeError
from sandbox.cluster import Sandbox
from sandbox.config import SandboxConfig
from sandbox.controlplane import ControllerProcess, nb_ports, pod_manifest

NAMESPACES = 20
NODES = 50


def ensure(api: KubeClient, path: str, body: dict) -> None:
    try:
        api.create(path, body)
    except KubeError as exc:
        if exc.status != 409:
            raise


def fake_nodes(api: KubeClient) -> None:
    for i in range(NODES):
        ensure(api, "/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": f"bench-{i}", "labels": {"kovn.io/bench": "true"}},
            "spec": {"unschedulable": True}})


def cpu_seconds(controller: ControllerProcess) -> float:
    """User + system CPU the controller process used so far (all its threads)."""
    assert controller.proc is not None
    fields = Path(f"/proc/{controller.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


RUN = str(int(time.time()))  # pod names and labels of this run: reruns never collide


def annotated_count(api: KubeClient) -> int:
    return sum(1 for p in api.list("/api/v1/pods", selector=f"kovn.io/bench={RUN}")
               if POD_NETWORK in p["metadata"].get("annotations", {}))


def create_pods(api: KubeClient, count: int) -> float:
    """Create the pods with 16 client threads; returns the time of the first create."""
    def one(i: int) -> None:
        ns = f"bench-{i % NAMESPACES}"
        api.create(f"/api/v1/namespaces/{ns}/pods",
                   pod_manifest(ns, f"p{RUN}-{i}", labels={"kovn.io/bench": RUN}))

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(count)))
    print(f"  created {count} pods in {time.monotonic() - started:.1f}s", flush=True)
    return started


def wait_all(api: KubeClient, nb_remote: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = annotated_count(api)
        ports = sum(1 for name in nb_ports(nb_remote) if f"_p{RUN}-" in name)
        if done >= count and ports >= count:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {done}/{count} annotated, {ports} ports")
        print(f"  ... {done} annotated, {ports} ports", flush=True)
        time.sleep(1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=2000)
    parser.add_argument("--state-dir", type=Path, help="use this running kube sandbox")
    args = parser.parse_args()
    own = args.state_dir is None
    if own:
        state_dir = Path(tempfile.mkdtemp(prefix="kovn-bench-"))
        sandbox = Sandbox(SandboxConfig(state_dir=state_dir, prefix="kvb", nodes=2,
                                        nb_tcp_port=None, controller=False, kube=True,
                                        workloads=False, apiserver_port=0, etcd_port=0,
                                        etcd_peer_port=0))
        sandbox.up(progress=lambda line: print(f"  {line}", flush=True))
    else:
        sandbox = Sandbox.load(args.state_dir)
    log = Path(sandbox.state_dir) / "bench-controller.log"
    controller = ControllerProcess(sandbox.nb_remote, sandbox.kubeconfig, log, resync=300)
    try:
        api = KubeClient(str(sandbox.kubeconfig))
        for i in range(NAMESPACES):
            ensure(api, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": f"bench-{i}"}})
        fake_nodes(api)
        controller.start()
        controller.wait_ready()
        cpu_before = cpu_seconds(controller)
        print(f"(a) {args.pods} pods, {NAMESPACES} namespaces, {NODES + len(sandbox.nodes)} "
              "nodes", flush=True)
        started = create_pods(api, args.pods)
        wait_all(api, sandbox.nb_remote, args.pods, timeout=max(120, args.pods / 20))
        elapsed = time.monotonic() - started
        rate = args.pods / elapsed
        cpu = cpu_seconds(controller) - cpu_before
        print(f"(a) all {args.pods} pods annotated with ports in {elapsed:.1f}s: "
              f"{rate:.0f} pods/s (goal >= 200); controller CPU {cpu:.1f}s "
              f"({cpu / args.pods * 1000:.2f} ms/pod)", flush=True)

        controller.kill()
        restart = time.monotonic()
        controller.start()
        controller.wait_ready(timeout=600)
        restart_s = time.monotonic() - restart
        print(f"(b) restart with {args.pods} pods: fully reconciled in {restart_s:.1f}s "
              f"(goal < 20 s at 10,000); controller CPU {cpu_seconds(controller):.1f}s",
              flush=True)
    finally:
        controller.stop()
        if not own:  # leave a borrowed sandbox as it was
            for i in range(NAMESPACES):
                api.call("DELETE", f"/api/v1/namespaces/bench-{i}/pods",
                         query={"labelSelector": f"kovn.io/bench={RUN}"})
        if own:
            sandbox.down()
    rows = nb_apply.desired_rows(min(args.pods, 10_000), 20)
    server = nb_apply.Server()
    try:
        raw = nb_apply.raw_transact(server.sock, nb_apply.raw_operations(rows))
    finally:
        server.stop()
    server = nb_apply.Server()
    try:
        kovn, _, _ = nb_apply.kovn_apply(server.sock, rows)
    finally:
        server.stop()
    print(f"NB apply of {min(args.pods, 10_000)} ports: raw {raw:.2f}s, kovn {kovn:.2f}s, "
          f"ratio {raw / kovn:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
