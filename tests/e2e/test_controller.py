"""The controller against the real control plane: Kubernetes objects in, NB rows, annotations,
conditions and Events out. OVN central is real too (no datapath is needed to check rows).
"""

from __future__ import annotations

import ipaddress

import pytest

from contract.podnetwork import NODE_NETWORK, STATIC_IP, NodeNetwork
from northbound import names
from sandbox.cluster import Sandbox
from sandbox.controlplane import ControllerProcess, eventually, nb_ports, pod_manifest
from tests.e2e.controlplane import Cluster, condition

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(kube_sandbox: Sandbox) -> Cluster:
    return Cluster(kube_sandbox.kubeconfig)


def port_of(sandbox: Sandbox, name: str) -> dict | None:
    return nb_ports(sandbox.nb_remote).get(name)


def test_cluster_topology_and_default_subnet(kube_sandbox: Sandbox, cluster: Cluster,
                                             controller: ControllerProcess) -> None:
    subnet = eventually(lambda: (s := cluster.subnet(names.DEFAULT_SUBNET)) and
                        condition(s, "Validated").get("status") == "True" and s,
                        what="default subnet validated")
    assert subnet["spec"]["cidrBlock"] == "10.16.0.0/16"
    assert condition(subnet, "Ready")["status"] == "True"
    ports = nb_ports(kube_sandbox.nb_remote)
    assert names.switch_router_port(names.JOIN_SWITCH, names.CLUSTER_ROUTER) in ports
    assert names.switch_router_port(names.DEFAULT_SUBNET, names.CLUSTER_ROUTER) in ports


def test_nodes_get_management_ports(kube_sandbox: Sandbox, cluster: Cluster,
                                    controller: ControllerProcess) -> None:
    for node in kube_sandbox.nodes:
        def annotated(name: str = node.name) -> NodeNetwork | None:
            obj = cluster.api.call("GET", f"/api/v1/nodes/{name}")
            text = obj["metadata"].get("annotations", {}).get(NODE_NETWORK)
            return NodeNetwork.decode(text) if text else None

        network = eventually(annotated, what=f"{node.name} annotated")
        assert ipaddress.ip_interface(network.ip) in ipaddress.ip_network("100.64.0.0/16")
        port = eventually(lambda n=node.name: port_of(kube_sandbox, names.node_port(n)))
        assert port["addresses"] == [f"{network.mac} {network.address}"]
        assert port["options"]["requested-chassis"] == node.name


def test_pod_gets_address_port_and_annotation(kube_sandbox: Sandbox, cluster: Cluster,
                                              controller: ControllerProcess) -> None:
    cluster.namespace("t-basic")
    created = cluster.create_pod(pod_manifest("t-basic", "web"))
    network = eventually(lambda: cluster.network("t-basic", "web"), what="pod annotated")
    assert network.subnet == names.DEFAULT_SUBNET
    assert ipaddress.ip_interface(network.ip) in ipaddress.ip_network("10.16.0.0/16")
    assert network.gateway == "10.16.0.1" and network.mtu == 1400
    port = port_of(kube_sandbox, "t-basic_web")
    assert port is not None, "the port must exist before the annotation is published"
    assert port["addresses"] == [f"{network.mac} {network.address}"]
    assert port["options"]["iface-id-ver"] == created["metadata"]["uid"]
    # Scheduled by the real kube-scheduler: the port is pinned to that chassis.
    node = eventually(lambda: (cluster.pod("t-basic", "web") or {}).get("spec", {})
                      .get("nodeName"), what="pod scheduled")
    eventually(lambda: (port_of(kube_sandbox, "t-basic_web") or {}).get("options", {})
               .get("requested-chassis") == node, what="requested-chassis set")


def test_static_ip_and_conflict(kube_sandbox: Sandbox, cluster: Cluster,
                                controller: ControllerProcess) -> None:
    cluster.namespace("t-static")
    cluster.create_pod(pod_manifest("t-static", "fixed", {STATIC_IP: "10.16.200.7"}))
    network = eventually(lambda: cluster.network("t-static", "fixed"))
    assert network.address == "10.16.200.7"
    cluster.create_pod(pod_manifest("t-static", "clash", {STATIC_IP: "10.16.200.7"}))
    cluster.create_pod(pod_manifest("t-static", "outside", {STATIC_IP: "192.168.1.1"}))
    cluster.create_pod(pod_manifest("t-static", "bystander"))
    clash = eventually(lambda: [e for e in cluster.events("t-static", "clash")
                                if e["reason"] == "IPAllocationFailed"], what="conflict event")
    assert "10.16.200.7 is already used by t-static/fixed" in clash[0]["message"]
    outside = eventually(lambda: [e for e in cluster.events("t-static", "outside")
                                  if e["reason"] == "IPAllocationFailed"])
    assert "outside subnet ovn-default" in outside[0]["message"]
    assert eventually(lambda: cluster.network("t-static", "bystander")), "others unaffected"
    ports = nb_ports(kube_sandbox.nb_remote)
    assert "t-static_clash" not in ports and "t-static_outside" not in ports
    assert cluster.network("t-static", "clash") is None


def test_host_network_pod_gets_no_port(kube_sandbox: Sandbox, cluster: Cluster,
                                       controller: ControllerProcess) -> None:
    cluster.namespace("t-host")
    cluster.create_pod(pod_manifest("t-host", "hostnet", host_network=True))
    cluster.create_pod(pod_manifest("t-host", "marker"))
    eventually(lambda: cluster.network("t-host", "marker"))  # the controller has caught up
    assert cluster.network("t-host", "hostnet") is None
    assert "t-host_hostnet" not in nb_ports(kube_sandbox.nb_remote)


def test_deletion_and_completion_release(kube_sandbox: Sandbox, cluster: Cluster,
                                         controller: ControllerProcess) -> None:
    cluster.namespace("t-release")
    cluster.create_pod(pod_manifest("t-release", "gone"))
    cluster.create_pod(pod_manifest("t-release", "done"))
    eventually(lambda: cluster.network("t-release", "gone") and
               cluster.network("t-release", "done"))
    cluster.delete_pod("t-release", "gone")
    eventually(lambda: "t-release_gone" not in nb_ports(kube_sandbox.nb_remote),
               what="port of deleted pod removed")
    cluster.api.merge_patch("/api/v1/namespaces/t-release/pods/done/status",
                            {"status": {"phase": "Succeeded"}})
    eventually(lambda: "t-release_done" not in nb_ports(kube_sandbox.nb_remote),
               what="port of completed pod removed")


def test_subnet_by_namespace_list_and_annotation(kube_sandbox: Sandbox, cluster: Cluster,
                                                 controller: ControllerProcess) -> None:
    cluster.apply_subnet("blue", {"cidrBlock": "10.17.0.0/16", "namespaces": ["t-blue"],
                                  "excludeIps": ["10.17.0.2..10.17.0.9"]})
    eventually(lambda: condition(cluster.subnet("blue"), "Ready").get("status") == "True",
               what="subnet blue ready")
    cluster.namespace("t-blue")
    cluster.namespace("t-green", {"ovn.kubernetes.io/logical_switch": "blue"})
    cluster.create_pod(pod_manifest("t-blue", "a"))
    cluster.create_pod(pod_manifest("t-green", "b"))
    for ns, name in (("t-blue", "a"), ("t-green", "b")):
        network = eventually(lambda n=ns, p=name: cluster.network(n, p))
        assert network.subnet == "blue"
        address = ipaddress.ip_address(network.address)
        assert address in ipaddress.ip_network("10.17.0.0/16")
        assert not ipaddress.ip_address("10.17.0.2") <= address <= \
            ipaddress.ip_address("10.17.0.9"), "excludeIps are never handed out"
    assert f"blue-{names.CLUSTER_ROUTER}" in nb_ports(kube_sandbox.nb_remote)
    status = eventually(lambda: (cluster.subnet("blue") or {}).get("status", {})
                        .get("usingIPs") == 2 and cluster.subnet("blue"))
    assert status["status"]["availableIPs"] == 65534 - 1 - 8 - 2


@pytest.mark.parametrize(
    ("name", "spec", "reason"),
    [
        ("overlap", {"cidrBlock": "10.16.128.0/24"}, "OverlappingCIDR"),
        ("badgw", {"cidrBlock": "10.30.0.0/24", "gateway": "10.31.0.1"}, "GatewayOutsideCIDR"),
        ("badexclude", {"cidrBlock": "10.32.0.0/24", "excludeIps": ["10.33.0.5"]},
         "ExcludeIpsOutsideCIDR"),
        ("joinclash", {"cidrBlock": "100.64.5.0/24"}, "OverlapsReservedRange"),
    ],
)
def test_invalid_subnet_condition_and_event(cluster: Cluster, controller: ControllerProcess,
                                            name: str, spec: dict, reason: str) -> None:
    cluster.apply_subnet(name, spec)
    validated = eventually(lambda: condition(cluster.subnet(name), "Validated") or None,
                           what=f"{name} has a Validated condition")
    assert validated["status"] == "False" and validated["reason"] == reason
    events = eventually(lambda: [e for e in cluster.events("default", name)
                                 if e["reason"] == reason], what=f"{reason} event")
    assert events[0]["type"] == "Warning"
    # The valid default subnet is untouched.
    assert condition(cluster.subnet(names.DEFAULT_SUBNET), "Ready")["status"] == "True"
    cluster.delete_subnet(name)


def test_exhaustion_event_and_recovery(kube_sandbox: Sandbox, cluster: Cluster,
                                       controller: ControllerProcess) -> None:
    # /29: 6 host addresses, minus the gateway: 5 pods fit.
    cluster.apply_subnet("tiny", {"cidrBlock": "10.40.0.0/29", "namespaces": ["t-tiny"]})
    eventually(lambda: condition(cluster.subnet("tiny"), "Ready").get("status") == "True")
    cluster.namespace("t-tiny")
    for i in range(6):
        cluster.create_pod(pod_manifest("t-tiny", f"p{i}"))
    served = eventually(lambda: [p for p in range(6) if cluster.network("t-tiny", f"p{p}")]
                        if sum(1 for p in range(6) if cluster.network("t-tiny", f"p{p}")) == 5
                        else None, what="5 of 6 pods served")
    (starved,) = set(range(6)) - set(served)
    event = eventually(lambda: [e for e in cluster.events("t-tiny", f"p{starved}")
                                if e["reason"] == "IPAllocationFailed"])
    assert "no free address" in event[0]["message"]
    cluster.delete_pod("t-tiny", f"p{served[0]}")
    assert eventually(lambda: cluster.network("t-tiny", f"p{starved}"),
                      what="the waiting pod gets the released address")


def test_subnet_deletion_waits_for_its_pods(kube_sandbox: Sandbox, cluster: Cluster,
                                            controller: ControllerProcess) -> None:
    cluster.apply_subnet("doomed", {"cidrBlock": "10.41.0.0/24", "namespaces": ["t-doomed"]})
    eventually(lambda: condition(cluster.subnet("doomed"), "Ready").get("status") == "True")
    cluster.namespace("t-doomed")
    cluster.create_pod(pod_manifest("t-doomed", "last"))
    eventually(lambda: cluster.network("t-doomed", "last"))
    cluster.delete_subnet("doomed")
    held = eventually(lambda: condition(cluster.subnet("doomed"), "Ready").get("reason") ==
                      "InUse" and cluster.subnet("doomed"), what="deletion held by finalizer")
    assert "1 pods" in condition(held, "Ready")["message"]
    assert "doomed-ovn-cluster" in nb_ports(kube_sandbox.nb_remote)
    cluster.delete_pod("t-doomed", "last")
    eventually(lambda: cluster.subnet("doomed") is None, what="subnet deleted after its pods")
    eventually(lambda: "doomed-ovn-cluster" not in nb_ports(kube_sandbox.nb_remote),
               what="switch removed")
