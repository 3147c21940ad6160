"""controller.services and controller.templates, outside -> Service: node ports (one template
load balancer on `^NODE_EXTERNAL_IP`), externalIPs, LoadBalancer ingress IPs, and the traffic
policies' Local (template backends `^LOCAL_...` that each Node's Chassis_Template_Var fills
with its own endpoints)."""

from __future__ import annotations

from typing import Any

import pytest

from controller.services import (
    FIVE_TUPLE,
    external_ips,
    load_balancers,
    local_endpoints,
    serves_locally,
)
from controller.templates import node_variables
from northbound import names
from northbound.rows import LoadBalancerGroup, LogicalRouter

PORTS = [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}]
LOCAL = "^" + names.local_endpoints_var("demo", "web", "TCP", "80")
TEMPLATE = {"template": "true", "address-family": "ipv4"}


def service(**spec: Any) -> dict[str, Any]:
    status = spec.pop("status", {})
    return {"metadata": {"namespace": "demo", "name": "web"},
            "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "ports": PORTS,
                     **spec}, "status": status}


def slices(*endpoints: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
             "endpoints": [{"addresses": [ip], "nodeName": node, "conditions": {"ready": True}}
                           for ip, node in endpoints]}]


TWO = slices(("10.16.0.4", "node1"), ("10.16.0.5", "node2"))
BACKENDS = "10.16.0.4:8080,10.16.0.5:8080"


def by_name(rows: Any) -> dict[str, Any]:
    return {r.name: r for r in rows}


def options(lb: Any) -> dict[str, str]:
    return {k: v for k, v in lb.options.items() if k != "hairpin_snat_ip"}


def test_node_ports_are_one_template_load_balancer_for_every_node() -> None:
    lbs = by_name(load_balancers(service(type="NodePort"), TWO).rows)
    assert set(lbs) == {"Service_demo/web_TCP", "Service_demo/web_TCP_node"}
    node = lbs["Service_demo/web_TCP_node"]
    assert node.vips == {"^NODE_EXTERNAL_IP:30080": BACKENDS}
    assert options(node) == TEMPLATE  # the router's lb_force_snat_ip brings replies back
    assert node.selection_fields == FIVE_TUPLE
    assert node.member_of == {LoadBalancerGroup.membership(names.CLUSTER_LB_GROUP)}
    cluster = lbs["Service_demo/web_TCP"]
    assert cluster.vips == {"10.96.0.10:80": BACKENDS} and options(cluster) == {}


def test_a_cluster_ip_service_has_no_node_port_even_if_a_port_names_one() -> None:
    rows = load_balancers(service(type="ClusterIP"), TWO).rows
    assert [r.name for r in rows] == ["Service_demo/web_TCP"]


def test_external_and_load_balancer_ips_are_vips_of_the_cluster_load_balancer() -> None:
    svc = service(type="LoadBalancer", externalIPs=["198.51.100.210"],
                  status={"loadBalancer": {"ingress": [{"ip": "198.51.100.200"},
                                                       {"hostname": "lb.example"}]}})
    assert external_ips(svc) == ["198.51.100.200", "198.51.100.210"]
    lbs = by_name(load_balancers(svc, TWO).rows)
    assert lbs["Service_demo/web_TCP"].vips == {
        "10.96.0.10:80": BACKENDS, "198.51.100.200:80": BACKENDS, "198.51.100.210:80": BACKENDS}
    assert lbs["Service_demo/web_TCP_node"].vips == {"^NODE_EXTERNAL_IP:30080": BACKENDS}


def test_ingress_ips_count_only_for_type_load_balancer() -> None:
    svc = service(type="ClusterIP", status={"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}]}})
    assert external_ips(svc) == []


def test_external_traffic_policy_local_goes_to_each_nodes_own_endpoints() -> None:
    svc = service(type="LoadBalancer", externalTrafficPolicy="Local",
                  status={"loadBalancer": {"ingress": [{"ip": "198.51.100.200"}]}})
    one_node = slices(("10.16.0.4", "node1"), ("10.16.0.6", "node1"))
    mine = "10.16.0.4:8080,10.16.0.6:8080"
    lbs = by_name(load_balancers(svc, one_node, ["node1", "node2"]).rows)
    assert set(lbs) == {"Service_demo/web_TCP", "Service_demo/web_TCP_local",
                        "Service_demo/web_TCP_local_node1"}
    local = lbs["Service_demo/web_TCP_local"]
    assert local.vips == {"^NODE_EXTERNAL_IP:30080": LOCAL}
    assert options(local) == {**TEMPLATE, "skip_snat": "true"}
    # The LoadBalancer IP: a plain VIP on the gateway router of the node with endpoints
    # only (so only that router answers ARP for it).
    on_node1 = lbs["Service_demo/web_TCP_local_node1"]
    assert on_node1.vips == {"198.51.100.200:80": mine}
    assert options(on_node1) == {"skip_snat": "true"}
    assert on_node1.member_of == {LogicalRouter.membership("GR_node1", "load_balancer")}
    # Inside the cluster the Service still balances over every endpoint.
    assert lbs["Service_demo/web_TCP"].vips == {"10.96.0.10:80": mine}
    # Each node's chassis fills ^LOCAL_... with its own endpoints, and with nothing when it
    # has none: an empty value drops (Kubernetes' rule), it does not fall back to others.
    var = LOCAL[1:]
    assert node_variables("node1", "198.51.100.11", [(svc, one_node)]) == {
        "NODE_EXTERNAL_IP": "198.51.100.11", var: mine}
    assert node_variables("node2", None, [(svc, one_node)]) == {var: ""}
    # An endpoint on a node without a gateway router serves its IP from nowhere.
    assert "Service_demo/web_TCP_local_node1" not in by_name(
        load_balancers(svc, one_node, ["node2"]).rows)


def test_internal_traffic_policy_local_sends_cluster_ips_to_the_clients_node() -> None:
    svc = service(type="NodePort", internalTrafficPolicy="Local")
    lbs = by_name(load_balancers(svc, TWO).rows)
    assert set(lbs) == {"Service_demo/web_TCP_node"}
    assert lbs["Service_demo/web_TCP_node"].vips == {"10.96.0.10:80": LOCAL,
                                                    "^NODE_EXTERNAL_IP:30080": BACKENDS}
    assert local_endpoints(svc, TWO) == {LOCAL[1:]: {"node1": "10.16.0.4:8080",
                                                     "node2": "10.16.0.5:8080"}}


def test_only_local_policies_make_node_variables() -> None:
    assert not serves_locally(service(type="NodePort"))
    assert serves_locally(service(externalTrafficPolicy="Local"))
    assert not serves_locally(service(clusterIP="None", clusterIPs=["None"],
                                      internalTrafficPolicy="Local"))
    assert node_variables("node1", "198.51.100.11", [(service(), TWO)]) == {
        "NODE_EXTERNAL_IP": "198.51.100.11"}


def test_node_ports_without_endpoints_reject() -> None:
    lbs = by_name(load_balancers(service(type="NodePort"), []).rows)
    assert lbs["Service_demo/web_TCP_node"].options["reject"] == "true"


@pytest.mark.parametrize("policy", ["Cluster", "Local"])
def test_affinity_on_node_ports_hashes_the_client_address(policy: str) -> None:
    """OVN 23.03's affinity flows for template VIPs are IPv6 ones: they never match."""
    svc = service(type="NodePort", sessionAffinity="ClientIP", externalTrafficPolicy=policy)
    lbs = by_name(load_balancers(svc, TWO).rows)
    template = lbs["Service_demo/web_TCP_node" if policy == "Cluster" else
                   "Service_demo/web_TCP_local"]
    assert "affinity_timeout" not in template.options
    assert template.selection_fields == ("ip_dst", "ip_src")
    cluster = lbs["Service_demo/web_TCP"]
    assert cluster.options["affinity_timeout"] == "10800"
    assert cluster.selection_fields == FIVE_TUPLE


def test_show_expands_templates_as_a_chassis_does() -> None:
    from northbound.show import _expand

    variables = {"NODE_EXTERNAL_IP": "198.51.100.11", LOCAL[1:]: ""}
    assert _expand("^NODE_EXTERNAL_IP:30080", variables) == "198.51.100.11:30080"
    assert _expand(LOCAL, variables) == ""  # set but empty: dropped there
    assert _expand("^UNSET:80", variables) is None  # not served there
