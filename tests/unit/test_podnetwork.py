"""contract.podnetwork: the annotation contract between the controller and the node agent."""

from __future__ import annotations

import json

import pytest

from contract import podnetwork
from contract.podnetwork import (
    NODE_NETWORK,
    POD_NETWORK,
    NodeNetwork,
    PodNetwork,
    Route,
    mac_from_ip,
)

POD = PodNetwork(ip="10.16.0.5/16", mac="0a:58:0a:10:00:05", gateway="10.16.0.1",
                 subnet="ovn-default", logical_switch_port="default_web-1")
NODE = NodeNetwork(ip="100.64.0.3/16", mac="0a:58:64:40:00:03", gateway="100.64.0.1",
                   logical_switch_port="node-node1")


def test_annotation_names() -> None:
    assert POD_NETWORK == "kovn.io/pod-network"
    assert NODE_NETWORK == "kovn.io/node-network"
    # Kube-OVN's names, so existing manifests keep working
    assert podnetwork.STATIC_IP == "ovn.kubernetes.io/ip_address"
    assert podnetwork.STATIC_MAC == "ovn.kubernetes.io/mac_address"
    assert podnetwork.LOGICAL_SWITCH == "ovn.kubernetes.io/logical_switch"
    assert podnetwork.INGRESS_RATE == "ovn.kubernetes.io/ingress_rate"
    assert podnetwork.EGRESS_RATE == "ovn.kubernetes.io/egress_rate"
    assert podnetwork.DEFAULT_MTU == 1400


@pytest.mark.parametrize(
    "network",
    [
        POD,
        PodNetwork(ip="10.17.3.4/24", mac="0A:58:0A:11:03:04", gateway="10.17.3.254",
                   subnet="blue", logical_switch_port="team-a_db-0", mtu=8900,
                   routes=(Route("10.96.0.0/16", "10.17.3.254"),
                           Route("0.0.0.0/0", "10.17.3.1"))),
        PodNetwork(ip="10.16.0.5/16", mac="0a:58:0a:10:00:05", gateway="",
                   subnet="ovn-default", logical_switch_port="ns_p"),
    ],
)
def test_pod_network_round_trip(network: PodNetwork) -> None:
    text = network.encode()
    assert PodNetwork.decode(text) == network
    assert PodNetwork.decode(text).encode() == text


def test_pod_network_wire_format() -> None:
    network = PodNetwork(ip="10.16.0.5/16", mac="0a:58:0a:10:00:05", gateway="10.16.0.1",
                         subnet="ovn-default", logical_switch_port="default_web-1",
                         routes=(Route("10.96.0.0/16", "10.16.0.1"),))
    assert json.loads(network.encode()) == {
        "ip": "10.16.0.5/16", "mac": "0a:58:0a:10:00:05", "gateway": "10.16.0.1",
        "subnet": "ovn-default", "logical_switch_port": "default_web-1", "mtu": 1400,
        "routes": [{"dest": "10.96.0.0/16", "nextHop": "10.16.0.1"}],
    }
    # deterministic: the controller compares annotations as strings to skip no-op patches
    assert network.encode() == network.encode()
    assert network.address == "10.16.0.5"


def test_pod_network_decode_defaults() -> None:
    text = json.dumps({"ip": "10.16.0.5/16", "mac": "0a:58:0a:10:00:05",
                       "subnet": "ovn-default", "logical_switch_port": "default_web-1"})
    network = PodNetwork.decode(text)
    assert network.mtu == 1400
    assert network.routes == ()
    assert network.gateway == ""


GOOD = json.loads(POD.encode())


def without(key: str) -> str:
    return json.dumps({k: v for k, v in GOOD.items() if k != key})


def edited(**changes: object) -> str:
    return json.dumps({**GOOD, **changes})


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("not json", id="not-json"),
        pytest.param("{", id="truncated"),
        pytest.param("null", id="null"),
        pytest.param("[]", id="list"),
        pytest.param("5", id="number"),
        pytest.param('"10.16.0.5/16"', id="string"),
        pytest.param(without("ip"), id="missing-ip"),
        pytest.param(without("mac"), id="missing-mac"),
        pytest.param(without("subnet"), id="missing-subnet"),
        pytest.param(without("logical_switch_port"), id="missing-lsp"),
        pytest.param(edited(routes=[{"dest": "10.96.0.0/16"}]), id="route-without-next-hop"),
        pytest.param(edited(routes=["10.96.0.0/16"]), id="route-not-an-object"),
        pytest.param(edited(mtu="big"), id="mtu-not-a-number"),
        pytest.param(edited(mtu=None), id="mtu-null"),
        pytest.param(edited(ip="10.16.0.5"), id="ip-without-prefix"),
        pytest.param(edited(ip="nope/16"), id="ip-garbage"),
        pytest.param(edited(gateway="10.17.0.1"), id="gateway-outside"),
        pytest.param(edited(mac="zz:58:0a:10:00:05"), id="mac-not-hex"),
    ],
)
def test_pod_network_decode_errors(text: str) -> None:
    with pytest.raises(ValueError, match=POD_NETWORK):
        PodNetwork.decode(text)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"ip": "10.16.0.5"}, ["10.16.0.5", "prefix length"]),
        ({"ip": "10.16.0.5/32"}, ["prefix length"]),
        ({"ip": "10.16.0.500/16"}, ["10.16.0.500"]),
        ({"gateway": "10.17.0.1"}, ["10.17.0.1", "outside", "10.16.0.0/16"]),
        ({"gateway": "not-an-ip"}, ["not-an-ip"]),
        ({"mac": "0a:58:0a:10:00"}, ["0a:58:0a:10:00", "MAC"]),
        ({"mac": "0a:58:0a:10:00:05:06"}, ["MAC"]),
        ({"mac": "0a-58-0a-10-00-05"}, ["MAC"]),
        ({"mac": "0a:58:0a:10:00:5"}, ["MAC"]),
        ({"mac": "zz:58:0a:10:00:05"}, ["zz:58:0a:10:00:05", "MAC"]),
        ({"mac": "+a:58:0a:10:00:05"}, ["MAC"]),
        ({"mac": " a:58:0a:10:00:05"}, ["MAC"]),
        ({"mac": "-1:58:0a:10:00:05"}, ["MAC"]),
        ({"mac": ""}, ["MAC"]),
    ],
)
def test_pod_network_validation(changes: dict[str, str], words: list[str]) -> None:
    fields = {"ip": POD.ip, "mac": POD.mac, "gateway": POD.gateway, "subnet": POD.subnet,
              "logical_switch_port": POD.logical_switch_port, **changes}
    with pytest.raises(ValueError) as err:
        PodNetwork(**fields)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize(
    ("ip", "mac"),
    [
        ("10.16.0.5", "0a:58:0a:10:00:05"),
        ("10.16.0.1", "0a:58:0a:10:00:01"),
        ("100.64.0.1", "0a:58:64:40:00:01"),
        ("192.168.255.254", "0a:58:c0:a8:ff:fe"),
        ("0.0.0.0", "0a:58:00:00:00:00"),
        ("255.255.255.255", "0a:58:ff:ff:ff:ff"),
    ],
)
def test_mac_from_ip(ip: str, mac: str) -> None:
    assert mac_from_ip(ip) == mac


@pytest.mark.parametrize("ip", ["10.16.0.500", "fd00::1", "10.16.0.5/16", ""])
def test_mac_from_ip_rejects(ip: str) -> None:
    with pytest.raises(ValueError):
        mac_from_ip(ip)


def test_mac_from_ip_is_a_valid_pod_mac() -> None:
    network = PodNetwork(ip="10.16.7.9/16", mac=mac_from_ip("10.16.7.9"), gateway="10.16.0.1",
                         subnet="s", logical_switch_port="ns_p")
    assert network.mac == "0a:58:0a:10:07:09"


@pytest.mark.parametrize(
    "network",
    [
        NODE,
        NodeNetwork(ip="100.64.0.3/16", mac="0a:58:64:40:00:03", gateway="100.64.0.1",
                    logical_switch_port="node-node1",
                    pod_subnets=("10.16.0.0/16", "10.17.0.0/24"), mtu=1300),
        NodeNetwork(ip="100.64.0.3/16", mac="0a:58:64:40:00:03", gateway="100.64.0.1",
                    logical_switch_port="node-node1", gateway_router_ip="100.64.0.4"),
    ],
)
def test_node_network_round_trip(network: NodeNetwork) -> None:
    text = network.encode()
    assert NodeNetwork.decode(text) == network
    assert NodeNetwork.decode(text).encode() == text
    assert network.address == "100.64.0.3"


def test_node_network_wire_format() -> None:
    network = NodeNetwork(ip="100.64.0.3/16", mac="0a:58:64:40:00:03", gateway="100.64.0.1",
                          logical_switch_port="node-node1", pod_subnets=("10.16.0.0/16",))
    assert json.loads(network.encode()) == {
        "ip": "100.64.0.3/16", "mac": "0a:58:64:40:00:03", "gateway": "100.64.0.1",
        "logical_switch_port": "node-node1", "pod_subnets": ["10.16.0.0/16"], "mtu": 1400,
    }


NODE_GOOD = json.loads(NODE.encode())


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("not json", id="not-json"),
        pytest.param("null", id="null"),
        pytest.param("[1, 2]", id="list"),
        pytest.param(json.dumps({k: v for k, v in NODE_GOOD.items() if k != "gateway"}),
                     id="missing-gateway"),
        pytest.param(json.dumps({k: v for k, v in NODE_GOOD.items() if k != "ip"}),
                     id="missing-ip"),
        pytest.param(json.dumps({**NODE_GOOD, "ip": "100.64.0.3"}), id="ip-without-prefix"),
        pytest.param(json.dumps({**NODE_GOOD, "gateway": "10.16.0.1"}), id="gateway-outside"),
        pytest.param(json.dumps({**NODE_GOOD, "mac": "00:11"}), id="bad-mac"),
    ],
)
def test_node_network_decode_errors(text: str) -> None:
    with pytest.raises(ValueError, match=NODE_NETWORK):
        NodeNetwork.decode(text)


def test_node_network_records_the_gateway_router_only_when_it_has_one() -> None:
    assert "gateway_router_ip" not in json.loads(NODE.encode())
    with_gr = NodeNetwork(ip="100.64.0.3/16", mac="0a:58:64:40:00:03", gateway="100.64.0.1",
                          logical_switch_port="node-node1", gateway_router_ip="100.64.0.4")
    assert json.loads(with_gr.encode())["gateway_router_ip"] == "100.64.0.4"
    with pytest.raises(ValueError, match=r"gateway_router_ip 10\.16\.0\.4 is outside"):
        NodeNetwork(ip="100.64.0.3/16", mac="0a:58:64:40:00:03", gateway="100.64.0.1",
                    logical_switch_port="node-node1", gateway_router_ip="10.16.0.4")


def test_node_network_validation() -> None:
    with pytest.raises(ValueError, match="outside"):
        NodeNetwork(ip="100.64.0.3/16", mac="0a:58:64:40:00:03", gateway="10.16.0.1",
                    logical_switch_port="node-node1")
