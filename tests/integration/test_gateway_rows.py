"""A node's gateway rows through the reconciler into a real NB ovsdb-server: what ovn-nbctl
then shows, that a second apply changes nothing, and that a node's rows come and go alone."""

from __future__ import annotations

from contract.gateway import ExternalNetwork
from controller import gateway, topology
from controller.config import ClusterConfig
from controller.subnets import SubnetSpec
from northbound.reconciler import Reconciler
from northbound.rows import NbRow, Owner
from tests.integration.conftest import NbServer

CONFIG = ClusterConfig()
SUBNETS = (SubnetSpec(name="ovn-default", cidr="10.16.0.0/16", gateway="10.16.0.1",
                      nat_outgoing=True),
           SubnetSpec(name="routed", cidr="10.71.0.0/24", gateway="10.71.0.1"))


def node(index: int) -> list[NbRow]:
    name = f"node{index}"
    external = ExternalNetwork(f"198.51.100.{10 + index}/24", "198.51.100.1")
    network = topology.node_network(name, f"100.64.0.{2 * index}", CONFIG,
                                    tuple(s.cidr for s in SUBNETS), f"100.64.0.{2 * index + 1}")
    return [*topology.node_rows(name, network),
            *gateway.gateway_rows(gateway.Gateway(name, network.gateway_router_ip, external,
                                                  SUBNETS), CONFIG)]


def cluster() -> list[NbRow]:
    rows = topology.cluster_rows(CONFIG)
    for spec in SUBNETS:
        rows += topology.subnet_rows(spec, CONFIG)
    return rows


def test_gateway_rows_apply_and_stay_applied(nb_server: NbServer,
                                             reconciler: Reconciler) -> None:
    desired = [*cluster(), *node(1), *node(2)]
    plan = reconciler.reconcile(desired)
    assert len(plan.creates) == len(desired)
    assert not reconciler.reconcile(desired)  # applying again: nothing to do

    assert "GR_node1" in nb_server.nbctl("lr-list")
    routes = nb_server.nbctl("lr-route-list", "GR_node1")
    assert "0.0.0.0/0" in routes and "198.51.100.1" in routes and "10.71.0.0/24" in routes
    assert "snat" in nb_server.nbctl("lr-nat-list", "GR_node1")
    assert "10.71.0.0/24" not in nb_server.nbctl("lr-nat-list", "GR_node1")  # routed
    policies = nb_server.nbctl("lr-policy-list", "ovn-cluster")
    assert policies.count("reroute") == 2 and 'is_chassis_resident("rtoj-GR_node2")' in policies
    ecmp = nb_server.nbctl("lr-route-list", "ovn-cluster")
    assert "100.64.0.3" in ecmp and "100.64.0.5" in ecmp and "ecmp" in ecmp
    assert nb_server.nbctl("get", "Logical_Router", "GR_node1", "options:chassis").strip() \
        == "node1"
    assert nb_server.nbctl("lsp-get-type", "ln-ext_node2").strip() == "localnet"

    # Node 2 goes: only its rows go, node 1's gateway and the cluster router stay.
    plan = reconciler.reconcile([], owners={Owner("Node", "node2")})
    assert {d.row.TABLE for d in plan.deletes} >= {"Logical_Router", "Logical_Router_Policy",
                                                   "NAT", "Logical_Switch"}
    assert len(plan.deletes) == len(node(2)) and not plan.creates and not plan.updates
    assert "GR_node2" not in nb_server.nbctl("lr-list")
    assert nb_server.nbctl("lr-policy-list", "ovn-cluster").count("reroute") == 1
