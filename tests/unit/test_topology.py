"""controller.topology: the desired NB rows of the cluster, subnets, nodes and pods."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from contract.podnetwork import POD_NETWORK, NodeNetwork, PodNetwork, mac_from_ip
from controller import topology
from controller.config import ClusterConfig
from controller.subnets import SubnetSpec, parse_subnet, validate
from northbound import names
from northbound.rows import (
    CLUSTER,
    LoadBalancerGroup,
    LogicalRouter,
    LogicalRouterPort,
    LogicalSwitch,
    LogicalSwitchPort,
    NbRow,
    Owner,
    ParentRef,
)

CONFIG = ClusterConfig()
DEFAULT = SubnetSpec(name="ovn-default", cidr="10.16.0.0/16", gateway="10.16.0.1")
BLUE = SubnetSpec(name="blue", cidr="10.17.0.0/24", gateway="10.17.0.254",
                  exclude_ips=("10.17.0.2", "10.17.0.10..10.17.0.20"))


def by_name(rows: list[NbRow]) -> dict[tuple[str, str], NbRow]:
    found = {row.ident: row for row in rows}
    assert len(found) == len(rows), "two rows with the same identity"
    return found


def one(rows: list[NbRow], cls: type[NbRow], name: str) -> NbRow:
    matches = [r for r in rows if isinstance(r, cls) and r.key == name]
    assert len(matches) == 1, f"{cls.__name__} {name}: {matches}"
    return matches[0]


# --- config --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("join_cidr", "gateway", "prefixlen"),
    [("100.64.0.0/16", "100.64.0.1", 16), ("100.65.0.0/24", "100.65.0.1", 24)],
)
def test_config_join(join_cidr: str, gateway: str, prefixlen: int) -> None:
    config = ClusterConfig(join_cidr=join_cidr)
    assert config.join_gateway == gateway
    assert config.join_prefixlen == prefixlen
    assert config.reserved_ranges()["join range"] == join_cidr


def test_config_defaults() -> None:
    assert CONFIG.default_subnet == names.DEFAULT_SUBNET == "ovn-default"
    assert CONFIG.default_cidr == "10.16.0.0/16"
    assert CONFIG.service_cidr == "10.96.0.0/16"
    assert CONFIG.mtu == 1400


# --- cluster -------------------------------------------------------------------------------------
def test_cluster_rows() -> None:
    rows = topology.cluster_rows(CONFIG)
    assert set(by_name(rows)) == {
        ("Logical_Router", "ovn-cluster"),
        ("Logical_Switch", "join"),
        ("Logical_Router_Port", "ovn-cluster-join"),
        ("Logical_Switch_Port", "join-ovn-cluster"),
        ("Load_Balancer_Group", "clusterLBGroup"),
        ("Logical_Router_Policy", "ovn-cluster|1001|ip4.dst == 100.64.0.0/16"),
        ("Logical_Router_Policy", "ovn-cluster|1001|ip4.dst == 10.96.0.0/16"),
        ("Meter", "kovn-acl-logging"),  # rate-limits ACL log lines
        ("Meter_Band", "kovn-acl-logging"),
    }
    router = one(rows, LogicalRouter, names.CLUSTER_ROUTER)
    assert router.owner == CLUSTER

    join = one(rows, LogicalSwitch, names.JOIN_SWITCH)
    assert join.columns()["other_config"] == {"subnet": "100.64.0.0/16"}

    lrp = one(rows, LogicalRouterPort, names.router_port(names.CLUSTER_ROUTER, names.JOIN_SWITCH))
    assert lrp.name == "ovn-cluster-join"
    assert lrp.networks == ("100.64.0.1/16",)
    assert lrp.mac == mac_from_ip("100.64.0.1") == "0a:58:64:40:00:01"
    assert lrp.parent() == ParentRef("Logical_Router", "ovn-cluster", "ports")

    lsp = one(rows, LogicalSwitchPort,
              names.switch_router_port(names.JOIN_SWITCH, names.CLUSTER_ROUTER))
    assert lsp.name == "join-ovn-cluster"
    assert lsp.type == "router"
    assert lsp.addresses == ("router",)
    assert lsp.options == {"router-port": "ovn-cluster-join"}
    assert lsp.parent() == ParentRef("Logical_Switch", "join", "ports")

    group = one(rows, LoadBalancerGroup, names.CLUSTER_LB_GROUP)
    assert group.name == "clusterLBGroup"
    assert "external_ids" not in group.columns()  # the NB schema has none for this table
    assert group.name in names.OWNED_LB_GROUPS


def test_cluster_rows_follow_the_join_cidr() -> None:
    rows = topology.cluster_rows(ClusterConfig(join_cidr="100.65.0.0/24"))
    lrp = one(rows, LogicalRouterPort, "ovn-cluster-join")
    assert lrp.networks == ("100.65.0.1/24",)
    assert lrp.mac == "0a:58:64:41:00:01"
    assert one(rows, LogicalSwitch, "join").other_config == {"subnet": "100.65.0.0/24"}


# --- subnets -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "other_config", "lrp_network", "lrp_mac"),
    [
        (DEFAULT, {"subnet": "10.16.0.0/16"}, "10.16.0.1/16", "0a:58:0a:10:00:01"),
        (BLUE, {"subnet": "10.17.0.0/24", "exclude_ips": "10.17.0.2 10.17.0.10..10.17.0.20"},
         "10.17.0.254/24", "0a:58:0a:11:00:fe"),
    ],
)
def test_subnet_rows(spec: SubnetSpec, other_config: dict[str, str], lrp_network: str,
                     lrp_mac: str) -> None:
    rows = topology.subnet_rows(spec)
    switch_name = names.subnet_switch(spec.name)
    lrp_name = names.router_port(names.CLUSTER_ROUTER, switch_name)
    lsp_name = names.switch_router_port(switch_name, names.CLUSTER_ROUTER)
    assert set(by_name(rows)) == {
        ("Logical_Switch", switch_name),
        ("Logical_Router_Port", lrp_name),
        ("Logical_Switch_Port", lsp_name),
        ("Logical_Router_Policy", f"ovn-cluster|1001|ip4.dst == {spec.cidr}"),
    }
    owner = Owner(names.OwnerType.SUBNET, spec.name)
    assert all(row.owner == owner for row in rows)

    switch = one(rows, LogicalSwitch, switch_name)
    assert switch.name == spec.name
    assert switch.other_config == other_config
    assert switch.references()["load_balancer_group"] == (
        "Load_Balancer_Group", frozenset({names.CLUSTER_LB_GROUP}))
    assert switch.references()["load_balancer"] == ("Load_Balancer", frozenset())

    lrp = one(rows, LogicalRouterPort, lrp_name)
    assert lrp_name == f"ovn-cluster-{spec.name}"
    assert lrp.router == names.CLUSTER_ROUTER
    assert lrp.networks == (lrp_network,)
    assert lrp.mac == lrp_mac
    assert lrp.parent() == ParentRef("Logical_Router", "ovn-cluster", "ports")

    lsp = one(rows, LogicalSwitchPort, lsp_name)
    assert lsp_name == f"{spec.name}-ovn-cluster"
    assert lsp.switch == switch_name
    assert lsp.type == "router"
    assert lsp.addresses == ("router",)
    assert lsp.options == {"router-port": lrp_name}


def test_subnet_and_cluster_rows_do_not_collide() -> None:
    rows = [*topology.cluster_rows(CONFIG), *topology.subnet_rows(DEFAULT),
            *topology.subnet_rows(BLUE)]
    by_name(rows)


# --- nodes ---------------------------------------------------------------------------------------
def test_node_network() -> None:
    network = topology.node_network("node1", "100.64.0.3", CONFIG, ("10.16.0.0/16",))
    assert network == NodeNetwork(ip="100.64.0.3/16", mac="0a:58:64:40:00:03",
                                  gateway="100.64.0.1", logical_switch_port="node-node1",
                                  pod_subnets=("10.16.0.0/16",), mtu=1400)


@pytest.mark.parametrize(("node", "ip"), [("node1", "100.64.0.3"), ("kind-worker2", "100.64.1.7")])
def test_node_rows(node: str, ip: str) -> None:
    network = topology.node_network(node, ip, CONFIG, ())
    rows = topology.node_rows(node, network)
    assert len(rows) == 1
    lsp = rows[0]
    assert isinstance(lsp, LogicalSwitchPort)
    assert lsp.name == names.node_port(node) == f"node-{node}"
    assert lsp.switch == names.JOIN_SWITCH
    assert lsp.parent() == ParentRef("Logical_Switch", "join", "ports")
    assert lsp.addresses == (f"{mac_from_ip(ip)} {ip}",)
    assert lsp.options == {"requested-chassis": node}
    assert lsp.type == ""
    assert lsp.owner == Owner(names.OwnerType.NODE, node)
    assert lsp.columns()["external_ids"] == {"kovn.io/owner-type": "Node", "kovn.io/owner": node}


# --- pods ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "ip", "mac", "spec", "expected"),
    [
        ("default/web-1", "10.16.0.5", None, DEFAULT,
         PodNetwork(ip="10.16.0.5/16", mac="0a:58:0a:10:00:05", gateway="10.16.0.1",
                    subnet="ovn-default", logical_switch_port="default_web-1", mtu=1400)),
        ("team-a/db-0", "10.17.0.30", "00:00:00:aa:bb:cc", BLUE,
         PodNetwork(ip="10.17.0.30/24", mac="00:00:00:aa:bb:cc", gateway="10.17.0.254",
                    subnet="blue", logical_switch_port="team-a_db-0", mtu=1400)),
    ],
)
def test_pod_network(key: str, ip: str, mac: str | None, spec: SubnetSpec,
                     expected: PodNetwork) -> None:
    network = topology.pod_network(key, ip, mac, spec, CONFIG)
    assert network == expected
    namespace, name = key.split("/")
    assert network.logical_switch_port == names.pod_port(namespace, name)
    assert PodNetwork.decode(network.encode()) == network


def test_pod_network_uses_the_configured_mtu() -> None:
    network = topology.pod_network("ns/p", "10.16.0.5", None, DEFAULT, ClusterConfig(mtu=1300))
    assert network.mtu == 1300


@pytest.mark.parametrize(("key", "spec"), [("default/web-1", DEFAULT), ("team-a/db-0", BLUE)])
def test_pod_rows(key: str, spec: SubnetSpec) -> None:
    ip = str(spec.network[30])
    network = topology.pod_network(key, ip, None, spec, CONFIG)
    rows = topology.pod_rows(key, network, "node1", "uid-123")
    assert len(rows) == 1
    lsp = rows[0]
    assert isinstance(lsp, LogicalSwitchPort)
    namespace, name = key.split("/")
    assert lsp.name == names.pod_port(namespace, name) == f"{namespace}_{name}"
    assert lsp.switch == names.subnet_switch(spec.name)
    assert lsp.parent() == ParentRef("Logical_Switch", spec.name, "ports")
    address = f"{mac_from_ip(ip)} {ip}"
    assert lsp.addresses == (address,)
    assert lsp.port_security == (address,)
    assert lsp.options == {"requested-chassis": "node1", "iface-id-ver": "uid-123"}
    assert lsp.type == ""
    assert lsp.owner == Owner(names.OwnerType.POD, key)
    assert lsp.columns()["external_ids"] == {
        names.OWNER_TYPE_KEY: "Pod", names.OWNER_KEY: key, names.POD_UID_KEY: "uid-123",
        POD_NETWORK: network.encode()}  # what the agent reads from the Port_Binding


def test_pod_rows_static_mac() -> None:
    network = topology.pod_network("ns/p", "10.16.0.9", "00:00:00:aa:bb:cc", DEFAULT, CONFIG)
    lsp = topology.pod_rows("ns/p", network, "node2", "u")[0]
    assert lsp.addresses == lsp.port_security == ("00:00:00:aa:bb:cc 10.16.0.9",)


def test_pod_rows_unscheduled_pod_has_no_requested_chassis() -> None:
    network = topology.pod_network("ns/p", "10.16.0.9", None, DEFAULT, CONFIG)
    lsp = topology.pod_rows("ns/p", network, "", "u")[0]
    assert lsp.options == {"iface-id-ver": "u"}


# --- everything together -------------------------------------------------------------------------
def test_every_row_has_an_owner_and_a_unique_identity() -> None:
    node = topology.node_network("node1", "100.64.0.2", CONFIG, ("10.16.0.0/16",))
    pods = [topology.pod_network(f"default/p{i}", f"10.16.0.{i + 2}", None, DEFAULT, CONFIG)
            for i in range(3)]
    rows = [
        *topology.cluster_rows(CONFIG),
        *topology.subnet_rows(DEFAULT),
        *topology.subnet_rows(BLUE),
        *topology.node_rows("node1", node),
        *(r for i, p in enumerate(pods)
          for r in topology.pod_rows(f"default/p{i}", p, "node1", f"u{i}")),
    ]
    by_name(rows)
    kinds = {str(t) for t in names.OwnerType}
    for row in rows:
        assert isinstance(row.owner, Owner)
        assert row.owner.type in kinds and row.owner.name
        if type(row).HAS_EXTERNAL_IDS:
            assert names.is_owned(row.columns()["external_ids"])
        else:
            assert row.key in names.OWNED_LB_GROUPS
    # every switch port hangs off a switch that exists, every router port off the router
    switches = {r.name for r in rows if isinstance(r, LogicalSwitch)}
    routers = {r.name for r in rows if isinstance(r, LogicalRouter)}
    for row in rows:
        parent = row.parent()
        if isinstance(row, LogicalSwitchPort):
            assert parent is not None and parent.name in switches
        if isinstance(row, LogicalRouterPort):
            assert parent is not None and parent.name in routers
    # router-type switch ports point at router ports that exist
    router_ports = {r.name for r in rows if isinstance(r, LogicalRouterPort)}
    for row in rows:
        if isinstance(row, LogicalSwitchPort) and row.type == "router":
            assert row.options["router-port"] in router_ports


def test_pod_addresses_are_inside_their_switch_subnet() -> None:
    network = topology.pod_network("ns/p", "10.17.0.30", None, BLUE, CONFIG)
    lsp = topology.pod_rows("ns/p", network, "n", "u")[0]
    switch = one(topology.subnet_rows(BLUE), LogicalSwitch, lsp.switch)
    mac, ip = lsp.addresses[0].split()
    assert mac == mac_from_ip(ip)
    assert ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(switch.other_config["subnet"])


# --- the default Subnet --------------------------------------------------------------------------
def test_default_subnet_object() -> None:
    obj = topology.default_subnet_object(CONFIG)
    assert obj == {
        "apiVersion": "kovn.io/v1", "kind": "Subnet",
        "metadata": {"name": "ovn-default"},
        "spec": {"cidrBlock": "10.16.0.0/16", "gateway": "10.16.0.1", "default": True,
                 "natOutgoing": True},
    }
    spec = parse_subnet(obj)
    assert spec == SubnetSpec(name="ovn-default", cidr="10.16.0.0/16", gateway="10.16.0.1",
                              default=True, nat_outgoing=True)
    assert validate([spec], CONFIG.reserved_ranges()) == {"ovn-default": []}


def test_default_subnet_object_follows_the_config() -> None:
    config = ClusterConfig(default_subnet="pods", default_cidr="172.20.0.0/20")
    spec = parse_subnet(topology.default_subnet_object(config))
    assert (spec.name, spec.cidr, spec.gateway, spec.default) == (
        "pods", "172.20.0.0/20", "172.20.0.1", True)


def test_private_subnet_acls_admit_only_itself_nodes_and_allowed() -> None:
    spec = SubnetSpec(name="secret", cidr="10.50.0.0/16", gateway="10.50.0.1", private=True,
                      allow_subnets=("10.17.0.0/16",))
    acls = [r for r in topology.subnet_rows(spec, CONFIG) if r.TABLE == "ACL"]
    by_priority = {(a.direction, a.priority): a for a in acls}
    deny = by_priority[("to-lport", 2000)]
    assert deny.action == "drop"
    assert deny.match == ("ip4.dst == 10.50.0.0/16 && ip4.src != "
                          "{10.50.0.0/16, 100.64.0.0/16, 169.254.169.5, 10.17.0.0/16}")
    assert by_priority[("from-lport", 1000)].action == "allow-related"
    assert len(acls) == 2
    assert all(a.switch == "secret" for a in acls)
    assert not [r for r in topology.subnet_rows(dataclasses.replace(spec, private=False))
                if r.TABLE == "ACL"]
