"""controller.gateway and contract.gateway: a node's gateway rows, and where its external
network comes from."""

from __future__ import annotations

import pytest

from contract import gateway as external
from contract.gateway import EXTERNAL_GATEWAY, EXTERNAL_IP, ExternalNetwork
from controller import gateway, topology
from controller.config import ClusterConfig
from controller.gateway import (
    CLUSTER_POLICY_PRIORITY,
    EGRESS_POLICY_PRIORITY,
    Gateway,
    egress_match,
    gateway_rows,
)
from controller.subnets import SubnetSpec
from northbound import names
from northbound.rows import (
    CLUSTER,
    NAT,
    ChassisTemplateVar,
    LogicalRouter,
    LogicalRouterPort,
    LogicalSwitch,
    LogicalSwitchPort,
    NbRow,
    Owner,
    ParentRef,
    RouterPolicy,
    StaticRoute,
)

CONFIG = ClusterConfig()
DEFAULT = SubnetSpec(name="ovn-default", cidr="10.16.0.0/16", gateway="10.16.0.1",
                     nat_outgoing=True)
ROUTED = SubnetSpec(name="routed", cidr="10.71.0.0/24", gateway="10.71.0.1")
EXT = ExternalNetwork("198.51.100.11/24", "198.51.100.1")
GW = Gateway("node1", "100.64.0.4", EXT, (ROUTED, DEFAULT))
NODE = Owner(names.OwnerType.NODE, "node1")


def of(rows: list[NbRow], cls: type[NbRow]) -> list[NbRow]:
    return [r for r in rows if isinstance(r, cls)]


def named(rows: list[NbRow], name: str) -> NbRow:
    found = [r for r in rows if getattr(r, "name", None) == name]
    assert len(found) == 1, name
    return found[0]


# --- contract: the Node's annotations ------------------------------------------------------------
def test_annotation_names() -> None:
    assert (EXTERNAL_IP, EXTERNAL_GATEWAY) == ("kovn.io/external-ip", "kovn.io/external-gateway")
    assert external.PHYSICAL_NETWORK == "physnet"
    assert external.bridge_mappings("br-ex") == "physnet:br-ex"


def test_from_annotations() -> None:
    assert external.from_annotations({}) is None
    assert external.from_annotations({"other": "x"}) is None
    found = external.from_annotations(EXT.annotations())
    assert found == EXT
    assert (found.address, str(found.network)) == ("198.51.100.11", "198.51.100.0/24")
    assert EXT.annotations() == {EXTERNAL_IP: "198.51.100.11/24",
                                 EXTERNAL_GATEWAY: "198.51.100.1"}


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({EXTERNAL_IP: "198.51.100.11/24"}, "kovn.io/external-gateway is missing"),
        ({EXTERNAL_GATEWAY: "198.51.100.1"}, "kovn.io/external-ip is missing"),
        ({EXTERNAL_IP: "198.51.100.11", EXTERNAL_GATEWAY: "198.51.100.1"}, "prefix length"),
        ({EXTERNAL_IP: "198.51.100.11/32", EXTERNAL_GATEWAY: "198.51.100.1"}, "prefix length"),
        ({EXTERNAL_IP: "nope/24", EXTERNAL_GATEWAY: "198.51.100.1"}, "nope"),
        ({EXTERNAL_IP: "198.51.100.11/24", EXTERNAL_GATEWAY: "203.0.113.1"},
         "not another address of 198.51.100.0/24"),
        ({EXTERNAL_IP: "198.51.100.11/24", EXTERNAL_GATEWAY: "198.51.100.11"},
         "not another address"),
    ],
)
def test_from_annotations_refuses(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        external.from_annotations(annotations)


# --- the rows ------------------------------------------------------------------------------------
def test_every_row_is_the_nodes_and_unique() -> None:
    rows = gateway_rows(GW, CONFIG)
    assert all(r.owner == NODE for r in rows)
    assert len({r.ident for r in rows}) == len(rows)
    # 10 + S + N: 2 serving Subnets, 1 of them natOutgoing
    assert len(rows) == 11 + 2 + 1


def test_gateway_router() -> None:
    rows = gateway_rows(GW, CONFIG)
    gr = named(rows, "GR_node1")
    assert isinstance(gr, LogicalRouter)
    assert gr.options == {"chassis": "node1", "lb_force_snat_ip": "router_ip"}
    assert gr.load_balancer_groups == frozenset({names.CLUSTER_LB_GROUP})
    assert gr.references() == {"load_balancer_group": ("Load_Balancer_Group",
                                                       frozenset({"clusterLBGroup"}))}


def test_join_link() -> None:
    rows = gateway_rows(GW, CONFIG)
    lrp = named(rows, "rtoj-GR_node1")
    assert isinstance(lrp, LogicalRouterPort)
    assert (lrp.router, lrp.networks, lrp.mac) == ("GR_node1", ("100.64.0.4/16",),
                                                   "0a:58:64:40:00:04")
    lsp = named(rows, "jtor-GR_node1")
    assert isinstance(lsp, LogicalSwitchPort)
    assert lsp.parent() == ParentRef("Logical_Switch", "join", "ports")
    assert (lsp.type, lsp.addresses, lsp.options) == ("router", ("router",),
                                                      {"router-port": "rtoj-GR_node1"})


def test_external_switch() -> None:
    rows = gateway_rows(GW, CONFIG)
    ext = named(rows, "ext_node1")
    assert isinstance(ext, LogicalSwitch) and not ext.load_balancer_groups
    lrp = named(rows, "rtoe-GR_node1")
    assert (lrp.router, lrp.networks, lrp.mac) == ("GR_node1", ("198.51.100.11/24",),
                                                   "0a:58:c6:33:64:0b")
    etor = named(rows, "etor-GR_node1")
    assert (etor.switch, etor.type, etor.options) == ("ext_node1", "router",
                                                      {"router-port": "rtoe-GR_node1"})
    ln = named(rows, "ln-ext_node1")
    assert (ln.switch, ln.type, ln.addresses, ln.options) == (
        "ext_node1", "localnet", ("unknown",), {"network_name": "physnet"})


def test_routes() -> None:
    routes = {(r.router, r.ip_prefix, r.nexthop) for r in of(gateway_rows(GW, CONFIG),
                                                              StaticRoute)}
    assert routes == {
        ("GR_node1", "0.0.0.0/0", "198.51.100.1"),  # out: the external next hop
        ("GR_node1", "10.96.0.0/16", "discard"),  # the service range it did not balance
        ("GR_node1", "10.16.0.0/16", "100.64.0.1"),  # back: each Subnet via ovn-cluster
        ("GR_node1", "10.71.0.0/24", "100.64.0.1"),
        ("ovn-cluster", "0.0.0.0/0", "100.64.0.4"),  # this node's member of the ECMP default
    }


def test_snat_only_for_nat_outgoing_subnets() -> None:
    nats = of(gateway_rows(GW, CONFIG), NAT)
    assert [(n.router, n.type, n.external_ip, n.logical_ip) for n in nats] == [
        ("GR_node1", "snat", "198.51.100.11", "10.16.0.0/16")]


def test_egress_policy() -> None:
    [policy] = of(gateway_rows(GW, CONFIG), RouterPolicy)
    assert policy.router == "ovn-cluster"
    assert policy.priority == EGRESS_POLICY_PRIORITY
    assert (policy.action, policy.nexthops) == ("reroute", ("100.64.0.4",))
    assert policy.match == 'ip4 && is_chassis_resident("rtoj-GR_node1")' == egress_match("node1")
    # The node's policy does not follow the Subnets: a new Subnet rewrites no policy.
    [alone] = of(gateway_rows(Gateway("node1", "100.64.0.4", EXT, ()), CONFIG), RouterPolicy)
    assert alone == policy


def test_cluster_ranges_are_allowed_above_the_egress_policies() -> None:
    """Positive matches only: a negated set (`ip4.dst != {...}`) cost 212,348 flows."""
    cluster = [r for r in topology.cluster_rows(CONFIG) if isinstance(r, RouterPolicy)]
    subnet = [r for r in topology.subnet_rows(ROUTED, CONFIG) if isinstance(r, RouterPolicy)]
    assert [(p.owner, p.match, p.action) for p in cluster + subnet] == [
        (CLUSTER, "ip4.dst == 100.64.0.0/16", "allow"),
        # what is still addressed to the service range was not balanced: dropped
        (CLUSTER, "ip4.dst == 10.96.0.0/16", "drop"),
        (Owner(names.OwnerType.SUBNET, "routed"), "ip4.dst == 10.71.0.0/24", "allow")]
    assert all(p.priority == CLUSTER_POLICY_PRIORITY > EGRESS_POLICY_PRIORITY
               for p in cluster + subnet)
    assert all("!=" not in p.match for p in [*cluster, *subnet, *of(gateway_rows(GW, CONFIG),
                                                                     RouterPolicy)])


def test_policies_of_two_nodes_do_not_collide() -> None:
    other = Gateway("node2", "100.64.0.5", ExternalNetwork("198.51.100.12/24", "198.51.100.1"),
                    GW.subnets)
    rows = gateway_rows(GW, CONFIG) + gateway_rows(other, CONFIG)
    assert len({r.ident for r in rows}) == len(rows)


def test_without_subnets_no_subnet_routes_and_no_nat() -> None:
    rows = gateway_rows(Gateway("node1", "100.64.0.4", EXT, ()), CONFIG)
    assert not of(rows, NAT) and len(of(rows, StaticRoute)) == 3
    assert len(rows) == 11


def test_rows_follow_natoutgoing_and_the_subnet_set() -> None:
    before = gateway_rows(GW, CONFIG)
    flipped = Gateway("node1", "100.64.0.4", EXT,
                      (DEFAULT, SubnetSpec(**{**ROUTED.__dict__, "nat_outgoing": True})))
    after = gateway_rows(flipped, CONFIG)
    assert len(of(after, NAT)) == 2
    assert {r.ident for r in before} < {r.ident for r in after}


@pytest.mark.parametrize(
    ("ip", "what"),
    [("100.64.200.1/24", "join range"), ("10.96.5.1/24", "service range"),
     ("10.71.0.200/24", "subnet routed")],
)
def test_external_network_may_not_overlap_the_cluster(ip: str, what: str) -> None:
    gw = Gateway("node1", "100.64.0.4", ExternalNetwork(ip, ip.rsplit(".", 1)[0] + ".2"),
                 GW.subnets)
    with pytest.raises(ValueError, match=what):
        gateway_rows(gw, CONFIG)
    with pytest.raises(ValueError, match=what):
        gateway.check("node1", gw.external, gw.subnets, CONFIG)


# --- operators.nodes: the Node's rows and the recorded GR address ---------------------------------
def _state(*nodes: dict):  # -> operators.state.State
    from tests.unit.worker_state import worker_state

    return worker_state(CONFIG, (DEFAULT, ROUTED), [("nodes", node) for node in nodes])


def _node(name: str, annotations: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": dict(annotations)}}


def test_sync_node_builds_the_gateway_and_records_its_address() -> None:
    from contract.podnetwork import NODE_NETWORK, NodeNetwork
    from operators import nodes
    from operators.state import JOIN_POOL, Batch

    state, batch = _state(_node("node1", EXT.annotations()), _node("node2", {})), Batch()
    nodes.sync_node(state, batch, "node1")
    nodes.sync_node(state, batch, "node2")
    rows1 = batch.rows[NODE]
    assert len(rows1) == 1 + 14 + 1  # the management port, the gateway, the template vars
    assert named(rows1, "GR_node1") and named(rows1, "node-node1")
    (variables,) = [r for r in rows1 if isinstance(r, ChassisTemplateVar)]
    assert variables.chassis == "node1"
    assert variables.variables == {"NODE_EXTERNAL_IP": EXT.address}
    rows2 = batch.rows[Owner(names.OwnerType.NODE, "node2")]
    # no external network, no gateway, no variables but the (empty) row
    assert [getattr(r, "name", r.TABLE) for r in rows2] == ["node-node2", "Chassis_Template_Var"]
    recorded = {p.key: NodeNetwork.decode(p.token) for p in batch.after_commit}
    pool = state.ipam.pool(JOIN_POOL)
    assert recorded["node1"].gateway_router_ip == pool.ip_of("GR_node1")
    assert recorded["node2"].gateway_router_ip == ""
    assert recorded["node1"].gateway_router_ip != recorded["node1"].address

    # A restarted controller re-takes both addresses from the annotation.
    restarted = _state(_node("node1", {**EXT.annotations(),
                                       NODE_NETWORK: recorded["node1"].encode()}))
    nodes.restore(restarted, "node1", restarted.cache.get("nodes", "node1"))
    again = Batch()
    nodes.sync_node(restarted, again, "node1")
    assert again.rows[NODE] == rows1
    assert not again.after_commit  # the annotation already says it all

    # Deleted: both addresses go back to the pool.
    restarted.cache.forget("nodes", _node("node1", {}))
    nodes.sync_node(restarted, again, "node1")
    assert again.rows[NODE] == []
    assert restarted.ipam.pool(JOIN_POOL).owners() == {}


def test_a_bad_external_network_is_reported_and_the_node_keeps_its_port() -> None:
    from operators import nodes
    from operators.state import Batch

    bad = {EXTERNAL_IP: "10.71.0.9/24", EXTERNAL_GATEWAY: "10.71.0.1"}  # inside Subnet routed
    state, batch = _state(_node("node1", bad)), Batch()
    nodes.sync_node(state, batch, "node1")
    assert [getattr(r, "name", r.TABLE) for r in batch.rows[NODE]] == [
        "node-node1", "Chassis_Template_Var"]
    [(reason, message)] = state.kube.events
    assert reason == "InvalidExternalNetwork" and "overlaps the subnet routed" in message
    nodes.sync_node(state, batch, "node1")
    assert len(state.kube.events) == 1  # said once


def test_node_external_networks_are_reserved_for_subnet_validation() -> None:
    from operators.subnets import reserved

    bad = _node("node3", {"kovn.io/external-ip": "garbage"})
    ranges = reserved(_state(_node("node1", EXT.annotations()), _node("node2", {}), bad))
    assert ranges["external network of node node1"] == str(EXT.network)
    assert not any("node2" in k or "node3" in k for k in ranges)
