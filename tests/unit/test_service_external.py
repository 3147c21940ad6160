"""controller.services, outside -> Service: node ports (a load balancer per node's gateway
router), externalIPs, LoadBalancer ingress IPs and externalTrafficPolicy Local."""

from __future__ import annotations

from typing import Any

from controller.services import external_ips, load_balancers
from northbound import names
from northbound.rows import LoadBalancerGroup, LogicalRouter

GATEWAYS = {"node1": ("198.51.100.11",), "node2": ("198.51.100.12",)}
PORTS = [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}]


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


def test_node_ports_are_vips_on_each_gateway_router() -> None:
    lbs = by_name(load_balancers(service(type="NodePort"), TWO, GATEWAYS).rows)
    assert set(lbs) == {"Service_demo/web_TCP", "Service_demo/web_TCP_node_node1",
                        "Service_demo/web_TCP_node_node2"}
    node1 = lbs["Service_demo/web_TCP_node_node1"]
    assert node1.vips == {"198.51.100.11:30080": BACKENDS}
    assert node1.options == {}  # the router's lb_force_snat_ip brings replies back
    assert node1.member_of == {LogicalRouter.membership("GR_node1", "load_balancer")}
    assert lbs["Service_demo/web_TCP_node_node2"].vips == {"198.51.100.12:30080": BACKENDS}
    cluster = lbs["Service_demo/web_TCP"]
    assert cluster.vips == {"10.96.0.10:80": BACKENDS}
    assert cluster.member_of == {LoadBalancerGroup.membership(names.CLUSTER_LB_GROUP)}


def test_a_cluster_ip_service_has_no_node_port_even_if_a_port_names_one() -> None:
    rows = load_balancers(service(type="ClusterIP"), TWO, GATEWAYS).rows
    assert [r.name for r in rows] == ["Service_demo/web_TCP"]


def test_external_and_load_balancer_ips_are_vips_of_the_cluster_load_balancer() -> None:
    svc = service(type="LoadBalancer", externalIPs=["198.51.100.210"],
                  status={"loadBalancer": {"ingress": [{"ip": "198.51.100.200"},
                                                       {"hostname": "lb.example"}]}})
    assert external_ips(svc) == ["198.51.100.200", "198.51.100.210"]
    lbs = by_name(load_balancers(svc, TWO, GATEWAYS).rows)
    assert lbs["Service_demo/web_TCP"].vips == {
        "10.96.0.10:80": BACKENDS, "198.51.100.200:80": BACKENDS, "198.51.100.210:80": BACKENDS}
    assert lbs["Service_demo/web_TCP_node_node1"].vips == {"198.51.100.11:30080": BACKENDS}


def test_ingress_ips_count_only_for_type_load_balancer() -> None:
    svc = service(type="ClusterIP", status={"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}]}})
    assert external_ips(svc) == []


def test_external_traffic_policy_local_is_per_node_with_local_endpoints_only() -> None:
    svc = service(type="LoadBalancer", externalTrafficPolicy="Local",
                  status={"loadBalancer": {"ingress": [{"ip": "198.51.100.200"}]}})
    one_node = slices(("10.16.0.4", "node1"), ("10.16.0.6", "node1"))
    lbs = by_name(load_balancers(svc, one_node, GATEWAYS).rows)
    assert set(lbs) == {"Service_demo/web_TCP", "Service_demo/web_TCP_node_node1"}
    local = lbs["Service_demo/web_TCP_node_node1"]
    assert local.vips == {"198.51.100.11:30080": "10.16.0.4:8080,10.16.0.6:8080",
                          "198.51.100.200:80": "10.16.0.4:8080,10.16.0.6:8080"}
    assert local.options == {"skip_snat": "true"}
    # Inside the cluster the Service still balances over every endpoint.
    assert lbs["Service_demo/web_TCP"].vips == {"10.96.0.10:80": "10.16.0.4:8080,10.16.0.6:8080"}


def test_local_policy_follows_the_endpoints_nodes() -> None:
    svc = service(type="NodePort", externalTrafficPolicy="Local")
    lbs = by_name(load_balancers(svc, TWO, GATEWAYS).rows)
    assert lbs["Service_demo/web_TCP_node_node1"].vips == {"198.51.100.11:30080": "10.16.0.4:8080"}
    assert lbs["Service_demo/web_TCP_node_node2"].vips == {"198.51.100.12:30080": "10.16.0.5:8080"}
    # An endpoint on a node without a gateway router serves only from inside.
    lbs = by_name(load_balancers(svc, slices(("10.16.0.9", "node3")), GATEWAYS).rows)
    assert set(lbs) == {"Service_demo/web_TCP"}


def test_node_ports_without_endpoints_reject() -> None:
    lbs = by_name(load_balancers(service(type="NodePort"), [], GATEWAYS).rows)
    assert lbs["Service_demo/web_TCP_node_node1"].options["reject"] == "true"


def test_affinity_applies_to_node_ports_too() -> None:
    svc = service(type="NodePort", sessionAffinity="ClientIP")
    lbs = by_name(load_balancers(svc, TWO, GATEWAYS).rows)
    assert lbs["Service_demo/web_TCP_node_node1"].options == {"affinity_timeout": "10800"}

