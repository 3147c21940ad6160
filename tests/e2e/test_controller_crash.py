"""Crash consistency: SIGKILL the controller in the middle of a burst of 300 pod creations and
deletions, restart it, and check that the result is exactly right: every live pod has its
annotation and a matching port, no deleted pod keeps a port, no address is used twice."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from contract.podnetwork import POD_NETWORK, PodNetwork
from northbound import names
from sandbox.cluster import Sandbox
from sandbox.controlplane import ControllerProcess, eventually, nb_ports, pod_manifest
from tests.e2e.controlplane import Cluster

pytestmark = pytest.mark.e2e
NS = "t-crash"
PODS = 300


def converged(cluster: Cluster, nb_remote: str) -> tuple[bool, str]:
    live = {p["metadata"]["name"]: p for p in cluster.pods(NS)}
    ports = {n: p for n, p in nb_ports(nb_remote).items() if n.startswith(f"{NS}_")}
    networks: dict[str, PodNetwork] = {}
    for name, pod in live.items():
        text = pod["metadata"].get("annotations", {}).get(POD_NETWORK)
        if not text:
            return False, f"pod {name} not annotated yet"
        networks[name] = PodNetwork.decode(text)
    stale = set(ports) - {names.pod_port(NS, n) for n in live}
    if stale:
        return False, f"ports of deleted pods: {sorted(stale)[:5]}"
    for name, network in networks.items():
        port = ports.get(names.pod_port(NS, name))
        if port is None:
            return False, f"pod {name} has no port"
        if port["addresses"] != [f"{network.mac} {network.address}"]:
            return False, f"port of {name} says {port['addresses']}, annotation {network.ip}"
    return True, f"{len(live)} pods, {len(ports)} ports"


def test_sigkill_mid_burst_converges(kube_sandbox: Sandbox, tmp_path: Path) -> None:
    cluster = Cluster(kube_sandbox.kubeconfig)
    cluster.namespace(NS)
    controller = ControllerProcess(kube_sandbox.nb_remote, kube_sandbox.kubeconfig,
                                   tmp_path / "controller.log", resync=30)
    controller.start()
    try:
        controller.wait_ready()
        created = 0
        lock = threading.Lock()
        killed = threading.Event()

        def churn(i: int) -> None:
            nonlocal created
            cluster.create_pod(pod_manifest(NS, f"p{i}"))
            with lock:
                created += 1
                if created == PODS // 2 and not killed.is_set():
                    controller.kill()  # mid-burst, while flushes are in flight
                    killed.set()
            if i % 3 == 0:
                cluster.delete_pod(NS, f"p{i}")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(churn, range(PODS)))
        assert killed.is_set()
        controller.start()
        controller.wait_ready()
        state = {"why": ""}

        def check() -> bool:
            ok, state["why"] = converged(cluster, kube_sandbox.nb_remote)
            return ok

        eventually(check, timeout=60, what=f"convergence after restart ({state['why']})")
        live = cluster.pods(NS)
        assert len(live) == PODS - len(range(0, PODS, 3))
        addresses = Counter(PodNetwork.decode(p["metadata"]["annotations"][POD_NETWORK]).address
                            for p in live)
        assert max(addresses.values()) == 1, "an address is held by two live pods"
    finally:
        controller.stop()


def test_an_address_whose_annotation_never_got_out_is_kept(kube_sandbox: Sandbox,
                                                          tmp_path: Path) -> None:
    """Stopped between the NB commit and the PATCH: the node agent may already use the
    address (it reads the Port_Binding), so a restarted controller keeps it, from NB."""
    cluster = Cluster(kube_sandbox.kubeconfig)
    ns = "t-unpublished"
    cluster.namespace(ns)
    controller = ControllerProcess(kube_sandbox.nb_remote, kube_sandbox.kubeconfig,
                                   tmp_path / "controller.log")
    controller.start()
    try:
        controller.wait_ready()
        for name in ("a", "b", "c"):
            cluster.create_pod(pod_manifest(ns, name))
        networks = {n: eventually(lambda n=n: cluster.network(ns, n), 30, f"{n} annotated")
                    for n in ("a", "b", "c")}
        cluster.delete_pod(ns, "a")  # frees the lowest address: the next one handed out
        eventually(lambda: names.pod_port(ns, "a") not in nb_ports(kube_sandbox.nb_remote),
                   30, "a's port gone")
        controller.kill()
        cluster.api.merge_patch(f"/api/v1/namespaces/{ns}/pods/c",
                                {"metadata": {"annotations": {POD_NETWORK: None}}})
        controller.start()
        controller.wait_ready()
        again = eventually(lambda: cluster.network(ns, "c"), 30, "c annotated again")
        assert again == networks["c"]  # not a's freed address
        assert eventually(lambda: cluster.network(ns, "b"), 5, "b") == networks["b"]
    finally:
        controller.stop()
