"""The engine against the real control plane and a real OVN NB: one bad object never stops
the controller, invalid Subnets are refused before any row exists and are always deletable,
and a new kind is one declaration.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.config import ClusterConfig
from kube.client import KubeClient
from northbound.connection import NbConnection
from northbound.reconciler import Reconciler
from northbound.rows import AddressSet, Owner
from operators.kinds import KINDS, LISTWATCH, Kind
from operators.state import Batch, State
from operators.worker import Controller
from sandbox import identities, kube
from sandbox.cluster import Sandbox
from sandbox.controlplane import ControllerProcess, eventually, nb_ports, pod_manifest
from tests.e2e.controlplane import Cluster, condition

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(kube_sandbox: Sandbox) -> Cluster:
    return Cluster(kube_sandbox.kubeconfig)


@pytest.fixture
def controller(kube_sandbox: Sandbox, tmp_path: Path) -> Iterator[ControllerProcess]:
    # As the ServiceAccount kovn-controller (its RBAC must suffice), unless the sandbox runs
    # with admin identities.
    kubeconfig = identities.kubeconfig_for(kube_sandbox.config, identities.CONTROLLER_SA)
    with ControllerProcess(kube_sandbox.nb_remote, kubeconfig,
                           tmp_path / "controller.log").running() as proc:
        yield proc


def nbctl(sandbox: Sandbox, *args: str) -> str:
    return subprocess.run(["ovn-nbctl", f"--db={sandbox.nb_remote}", *args], check=True,
                          capture_output=True, text=True).stdout.strip()


def kubectl(sandbox: Sandbox, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(sandbox.kubeconfig)}
    return subprocess.run([str(kube.bin_dir() / "kubectl"), *args], env=env, timeout=timeout,
                          capture_output=True, text=True)


def events(cluster: Cluster, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in cluster.events(namespace, name) if e["reason"] == reason]


def test_a_subnet_named_join_is_refused_and_pods_keep_getting_networks(
        kube_sandbox: Sandbox, cluster: Cluster, controller: ControllerProcess) -> None:
    """The defect as a user hit it: a Subnet named `join` wedged every flush."""
    cluster.apply_subnet("join", {"cidrBlock": "10.55.0.0/24"})
    validated = eventually(lambda: condition(cluster.subnet("join"), "Validated") or None,
                           what="join has a Validated condition")
    assert validated["status"] == "False" and validated["reason"] == "ReservedName"
    assert "pick another name" in validated["message"]
    assert condition(cluster.subnet("join"), "Ready")["status"] == "False"
    eventually(lambda: events(cluster, "default", "join", "ReservedName"), what="an Event")
    # The cluster's own join switch is untouched, and a pod created right after is served.
    assert nbctl(kube_sandbox, "get", "Logical_Switch", "join", "other_config:subnet") == \
        '"100.64.0.0/16"'
    cluster.namespace("t-join")
    cluster.create_pod(pod_manifest("t-join", "after"))
    network = eventually(lambda: cluster.network("t-join", "after"), what="pod annotated")
    assert network.subnet == "ovn-default" and "t-join_after" in nb_ports(kube_sandbox.nb_remote)
    result = kubectl(kube_sandbox, "delete", "subnet", "join", "--wait", "--timeout=10s")
    assert result.returncode == 0, result.stderr
    cluster.delete_pod("t-join", "after")


INVALID = [
    ("bad-gw", {"cidrBlock": "10.57.0.0/24", "gateway": "10.58.0.1"}, "GatewayOutsideCIDR"),
    ("over-default", {"cidrBlock": "10.16.8.0/24"}, "OverlappingCIDR"),
    ("over-join", {"cidrBlock": "100.64.9.0/24"}, "OverlapsReservedRange"),
    ("over-service", {"cidrBlock": "10.96.4.0/24"}, "OverlapsReservedRange"),
    ("slash32", {"cidrBlock": "10.59.0.1/32"}, "InvalidCIDR"),
]


def test_invalid_subnets_are_deletable_at_once(kube_sandbox: Sandbox, cluster: Cluster,
                                               controller: ControllerProcess) -> None:
    for name, spec, _ in INVALID:
        cluster.apply_subnet(name, spec)
    for name, _, reason in INVALID:
        validated = eventually(lambda n=name: condition(cluster.subnet(n), "Validated") or None,
                               what=f"{name} validated")
        assert (validated["status"], validated["reason"]) == ("False", reason), name
        assert "kovn.io/subnet-protection" not in \
            cluster.subnet(name)["metadata"].get("finalizers", []), name
    for name, _, _ in INVALID:
        started = time.monotonic()
        result = kubectl(kube_sandbox, "delete", "subnet", name, "--wait", "--timeout=10s")
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert time.monotonic() - started < 10 and cluster.subnet(name) is None


def test_an_invalid_subnet_fixed_by_apply_becomes_ready(kube_sandbox: Sandbox, cluster: Cluster,
                                                        controller: ControllerProcess) -> None:
    cluster.namespace("t-fixed")
    cluster.apply_subnet("fixme", {"cidrBlock": "10.60.0.0/24", "gateway": "10.61.0.1",
                                   "namespaces": ["t-fixed"]})
    eventually(lambda: condition(cluster.subnet("fixme"), "Validated").get("status") == "False")
    cluster.create_pod(pod_manifest("t-fixed", "waits"))
    eventually(lambda: events(cluster, "t-fixed", "waits", "SubnetNotReady"),
               what="the pod says why it waits")
    cluster.apply_subnet("fixme", {"cidrBlock": "10.60.0.0/24", "gateway": "10.60.0.1",
                                   "namespaces": ["t-fixed"]})
    eventually(lambda: condition(cluster.subnet("fixme"), "Ready").get("status") == "True",
               what="fixed subnet Ready")
    network = eventually(lambda: cluster.network("t-fixed", "waits"), what="pod served")
    assert network.subnet == "fixme" and network.address.startswith("10.60.0.")
    # In use now: deletion is refused and names the pod, until the pod goes.
    cluster.delete_subnet("fixme")
    held = eventually(lambda: condition(cluster.subnet("fixme"), "Ready").get("reason") ==
                      "InUse" and cluster.subnet("fixme"), what="deletion held")
    assert "t-fixed/waits" in condition(held, "Ready")["message"]
    cluster.delete_pod("t-fixed", "waits")
    eventually(lambda: cluster.subnet("fixme") is None, what="deleted once its pod went")


def test_one_pod_nb_refuses_among_100_good_ones(kube_sandbox: Sandbox, cluster: Cluster,
                                                controller: ControllerProcess) -> None:
    """A hand-made port holds the name the bad pod's port needs: NB refuses that one row;
    the 100 others commit in the same flushes, and the bad one recovers once it is free."""
    cluster.namespace("t-iso")
    nbctl(kube_sandbox, "lsp-add", "ovn-default", "t-iso_bad")
    try:
        cluster.create_pod(pod_manifest("t-iso", "bad"))
        for i in range(100):
            cluster.create_pod(pod_manifest("t-iso", f"good-{i}"))
        eventually(lambda: len([p for p in cluster.pods("t-iso") if p["metadata"].get(
            "annotations", {}).get("kovn.io/pod-network")]) == 100, timeout=60,
            what="the 100 good pods annotated")
        refused = eventually(lambda: events(cluster, "t-iso", "bad", "NorthboundRefused"),
                             what="the bad pod's Event")
        assert "already exists" in refused[0]["message"]
        assert cluster.network("t-iso", "bad") is None
    finally:
        nbctl(kube_sandbox, "lsp-del", "t-iso_bad")
    eventually(lambda: cluster.network("t-iso", "bad"), timeout=60,
               what="the bad pod served once the name is free")
    kubectl(kube_sandbox, "delete", "namespace", "t-iso", "--wait=false")


# --- a new kind is one declaration -------------------------------------------------------------
def _set_name(key: str) -> str:
    return "t_cm_" + hashlib.sha256(key.encode()).hexdigest()[:12]


def configmap_rows(state: State, batch: Batch, key: str) -> None:
    """A test translator: a ConfigMap's values become an Address_Set; `boom` raises."""
    obj = state.cache.get("configmaps", key)
    owner = Owner("ConfigMap", key)
    if obj is None:
        batch.rows[owner] = []
        return
    data = obj.get("data") or {}
    if "boom" in data:
        raise ValueError(f"cannot translate {key}: {data['boom']}")
    batch.rows[owner] = [AddressSet(owner=owner, name=_set_name(key),
                                    addresses=tuple(sorted(data.values())))]


def test_a_new_kind_in_one_entry_and_a_raising_translation(kube_sandbox: Sandbox,
                                                           cluster: Cluster) -> None:
    kind = Kind("configmaps", "ConfigMap", "v1", "/api/v1/configmaps", top=("data",),
                watch=LISTWATCH, owner_type="ConfigMap", sync_one=configmap_rows)
    api = KubeClient(str(kube_sandbox.kubeconfig))
    cluster.namespace("t-kind")
    path = "/api/v1/namespaces/t-kind/configmaps"
    for i in range(100):
        api.create(path, {"metadata": {"name": f"good-{i}"}, "data": {"ip": f"10.1.0.{i}"}})
    api.create(path, {"metadata": {"name": "bad"}, "data": {"boom": "on purpose"}})
    with NbConnection(kube_sandbox.nb_remote) as nb:
        controller = Controller(ClusterConfig(), api, Reconciler(nb), resync=3600,
                                kinds=(*KINDS, kind))
        controller.start()
        try:
            sets = lambda: set(nbctl(kube_sandbox, "--bare", "--columns=name", "list",  # noqa: E731
                                     "Address_Set").split())
            eventually(lambda: {_set_name(f"t-kind/good-{i}") for i in range(100)} <= sets(),
                       what="100 address sets")
            event = eventually(lambda: events(cluster, "t-kind", "bad", "TranslationFailed"),
                               what="the raising one reports")
            assert "on purpose" in event[0]["message"]
            assert _set_name("t-kind/bad") not in sets()
            # Fix it: the retry picks up the new object and it converges.
            api.merge_patch(f"{path}/bad", {"data": {"boom": None, "ip": "10.1.1.1"}})
            eventually(lambda: _set_name("t-kind/bad") in sets(), what="fixed one converges")
            assert not controller.state.faults.failures
            # Deleting it removes its row: the owner's rows go with it.
            api.delete(f"{path}/good-0")
            eventually(lambda: _set_name("t-kind/good-0") not in sets(), what="row removed")
        finally:
            controller.stop()
            kubectl(kube_sandbox, "delete", "namespace", "t-kind", "--wait=false")
