"""controller.services: Services and EndpointSlices -> load balancers (table-driven)."""

from __future__ import annotations

from typing import Any

import pytest

from controller.services import FIVE_TUPLE, HAIRPIN_SNAT_IP, cluster_ips, load_balancers
from northbound import names
from northbound.rows import LoadBalancerGroup


def service(ports: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "demo", "name": "web"},
            "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "ports": ports,
                     **spec}}


def endpoint(ip: str, ready: bool = True, serving: bool | None = None,
             terminating: bool = False) -> dict[str, Any]:
    cond: dict[str, Any] = {"ready": ready, "terminating": terminating}
    if serving is not None:
        cond["serving"] = serving
    return {"addresses": [ip], "conditions": cond}


def slice_(endpoints: list[dict], ports: list[dict], address_type: str = "IPv4") -> dict:
    return {"addressType": address_type, "endpoints": endpoints, "ports": ports}


TCP80 = [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]
SLICE_PORTS = [{"name": "http", "port": 8080, "protocol": "TCP"}]


def test_ready_endpoints_behind_each_vip() -> None:
    result = load_balancers(service(TCP80), [slice_([endpoint("10.16.0.5"),
                                                     endpoint("10.16.0.4")], SLICE_PORTS)])
    (lb,) = result.rows
    assert lb.name == "Service_demo/web_TCP" and lb.protocol == "tcp"
    assert lb.vips == {"10.96.0.10:80": "10.16.0.4:8080,10.16.0.5:8080"}
    assert lb.options == {"hairpin_snat_ip": HAIRPIN_SNAT_IP}
    assert lb.member_of == {LoadBalancerGroup.membership(names.CLUSTER_LB_GROUP)}
    assert lb.owner.type == "Service" and lb.owner.name == "demo/web"


def test_named_target_ports_resolve_per_slice() -> None:
    # Two slices whose pods number the named port differently.
    result = load_balancers(service(TCP80), [
        slice_([endpoint("10.16.0.4")], [{"name": "http", "port": 8080, "protocol": "TCP"}]),
        slice_([endpoint("10.16.0.9")], [{"name": "http", "port": 9090, "protocol": "TCP"}]),
    ])
    assert result.rows[0].vips == {"10.96.0.10:80": "10.16.0.4:8080,10.16.0.9:9090"}


def test_one_lb_per_protocol_and_unnamed_ports() -> None:
    ports = [{"port": 53, "protocol": "UDP", "name": "dns"},
             {"port": 53, "protocol": "TCP", "name": "dns-tcp"},
             {"port": 5000, "protocol": "SCTP", "name": "s"}]
    slc = slice_([endpoint("10.16.0.7")], [{"name": "dns", "port": 5353, "protocol": "UDP"},
                                           {"name": "dns-tcp", "port": 5353, "protocol": "TCP"},
                                           {"name": "s", "port": 5001, "protocol": "SCTP"}])
    rows = {lb.protocol: lb for lb in load_balancers(service(ports), [slc]).rows}
    assert set(rows) == {"tcp", "udp", "sctp"}
    assert rows["udp"].vips == {"10.96.0.10:53": "10.16.0.7:5353"}
    assert rows["udp"].name == "Service_demo/web_UDP"
    unnamed = load_balancers(service([{"port": 80, "protocol": "TCP"}]),
                             [slice_([endpoint("10.16.0.7")], [{"port": 8080}])])
    assert unnamed.rows[0].vips == {"10.96.0.10:80": "10.16.0.7:8080"}


@pytest.mark.parametrize(("endpoints", "backends", "left_out"), [
    # Not ready: left out.
    ([endpoint("10.16.0.4"), endpoint("10.16.0.5", ready=False)], "10.16.0.4:8080",
     {"10.16.0.5": "not ready"}),
    # Only terminating-but-serving ones: they serve, as with kube-proxy.
    ([endpoint("10.16.0.4", ready=False, serving=True, terminating=True)], "10.16.0.4:8080",
     {}),
    # A ready one exists: the terminating one is left out.
    ([endpoint("10.16.0.4"), endpoint("10.16.0.5", ready=False, serving=True,
                                      terminating=True)], "10.16.0.4:8080",
     {"10.16.0.5": "terminating (ready endpoints exist)"}),
    # Terminating and not serving: never.
    ([endpoint("10.16.0.5", ready=False, serving=False, terminating=True)], "",
     {"10.16.0.5": "terminating"}),
])
def test_which_endpoints_serve(endpoints: list, backends: str, left_out: dict) -> None:
    result = load_balancers(service(TCP80), [slice_(endpoints, SLICE_PORTS)])
    assert result.rows[0].vips == {"10.96.0.10:80": backends}
    assert {o.address: o.reason for o in result.left_out} == left_out


def test_no_endpoints_reject_fast() -> None:
    (lb,) = load_balancers(service(TCP80), []).rows
    assert lb.vips == {"10.96.0.10:80": ""}
    assert lb.options["reject"] == "true" and lb.options["event"] == "false"


@pytest.mark.parametrize(("config", "options", "fields", "noted"), [
    ({}, {"affinity_timeout": "10800"}, FIVE_TUPLE, False),
    ({"clientIP": {"timeoutSeconds": 30}}, {"affinity_timeout": "30"}, FIVE_TUPLE, False),
    ({"clientIP": {"timeoutSeconds": 86400}}, {}, ("ip_dst", "ip_src"), True),
])
def test_client_ip_affinity(config: dict, options: dict, fields: tuple, noted: bool) -> None:
    svc = service(TCP80, sessionAffinity="ClientIP", sessionAffinityConfig=config)
    result = load_balancers(svc, [slice_([endpoint("10.16.0.4")], SLICE_PORTS)])
    (lb,) = result.rows
    assert {k: v for k, v in lb.options.items() if k != "hairpin_snat_ip"} == options
    assert lb.selection_fields == fields and bool(result.notes) is noted


@pytest.mark.parametrize("spec", [
    {"clusterIP": "None", "clusterIPs": ["None"]},
    {"type": "ExternalName", "externalName": "example.org", "clusterIP": ""},
])
def test_headless_and_external_name_create_nothing(spec: dict) -> None:
    svc = {"metadata": {"namespace": "demo", "name": "x"}, "spec": {"ports": TCP80, **spec}}
    assert cluster_ips(svc) == [] and load_balancers(svc, []).rows == ()


def test_ipv6_slices_and_addresses_are_ignored() -> None:
    svc = service(TCP80, clusterIPs=["10.96.0.10", "fd00::10"])
    result = load_balancers(svc, [slice_([endpoint("fd00::4")], SLICE_PORTS, "IPv6"),
                                  slice_([endpoint("10.16.0.4")], SLICE_PORTS)])
    assert result.rows[0].vips == {"10.96.0.10:80": "10.16.0.4:8080"}


def test_service_names_and_their_dns_row() -> None:
    from controller.services import dns_row, service_names
    from northbound.rows import LogicalSwitch

    assert service_names("Demo", "web", "cluster.local") == (
        "web.demo.svc.cluster.local", "web.demo.svc", "web.demo")
    row = dns_row(service(TCP80), ["ovn-default", "blue"], "cluster.local")
    assert row is not None and row.key == "dns:demo/web"
    assert row.records == {"web.demo.svc.cluster.local": "10.96.0.10",
                           "web.demo.svc": "10.96.0.10", "web.demo": "10.96.0.10"}
    assert row.member_of == {LogicalSwitch.membership("ovn-default", "dns_records"),
                             LogicalSwitch.membership("blue", "dns_records")}
    headless = service(TCP80, clusterIP="None", clusterIPs=["None"])
    assert dns_row(headless, ["ovn-default"], "cluster.local") is None
