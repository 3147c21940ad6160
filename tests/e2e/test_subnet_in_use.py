"""A Subnet that becomes invalid while pods use it keeps serving them: proven with packets."""

from __future__ import annotations

import pytest

from sandbox.cluster import Sandbox
from sandbox.controlplane import eventually, nb_ports
from sandbox.probe import ping
from tests.e2e.controlplane import Cluster, condition
from tests.e2e.test_network_model import create_deployment, ready_pods

pytestmark = pytest.mark.e2e
NS = "t-keep"


def test_subnet_gone_invalid_keeps_its_switch_and_its_pods_traffic(
        cluster_sandbox: Sandbox) -> None:
    cluster = Cluster(cluster_sandbox.kubeconfig)
    spec = {"cidrBlock": "10.62.0.0/24", "namespaces": [NS]}
    cluster.apply_subnet("keep", spec)
    eventually(lambda: condition(cluster.subnet("keep"), "Ready").get("status") == "True",
               what="subnet keep Ready")
    create_deployment(cluster, NS, "web", 2)
    a, b = ready_pods(cluster_sandbox, cluster, NS, "web", 2)
    assert a.ip.startswith("10.62.0.") and b.ip.startswith("10.62.0.")
    assert ping(a.netns, b.ip) and ping(b.netns, a.ip)

    # A typo in the gateway: the spec is invalid now, but its pods must not lose the network.
    cluster.apply_subnet("keep", {**spec, "gateway": "10.63.0.1"})
    subnet = eventually(lambda: (s := cluster.subnet("keep")) and
                        condition(s, "Validated").get("status") == "False" and s,
                        what="keep no longer validated")
    validated, ready = condition(subnet, "Validated"), condition(subnet, "Ready")
    assert validated["reason"] == "GatewayOutsideCIDR"
    assert "last valid spec (10.62.0.0/24" in validated["message"] and "2 pods" in \
        validated["message"]
    assert (ready["status"], ready["reason"]) == ("True", "ServingLastValidSpec")
    assert subnet["status"]["appliedSpec"]["gateway"] == "10.62.0.1"
    assert "keep-ovn-cluster" in nb_ports(cluster_sandbox.nb_remote)
    assert ping(a.netns, b.ip) and ping(b.netns, a.ip)

    # Fixed again: validated, same switch, same addresses.
    cluster.apply_subnet("keep", {**spec, "gateway": "10.62.0.1"})
    eventually(lambda: condition(cluster.subnet("keep"), "Validated").get("status") == "True",
               what="keep validated again")
    assert ping(a.netns, b.ip)
