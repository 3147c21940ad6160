"""Memberships across owners, against a real ovsdb-server.

A Service's load balancers join the Cluster's `clusterLBGroup` and a Node's gateway router
from the Service's side: each join and leave is one OVSDB mutate on the container's column,
read here off the wire (every transact the IDL sends), so other Services' members and members
made by hand are never rewritten, and the container's owner never recomputes.
"""

from __future__ import annotations

import pytest

from northbound import names
from northbound.connection import NbConnection, NorthboundError
from northbound.reconciler import Reconciler
from northbound.rows import (
    CLUSTER,
    LoadBalancer,
    LoadBalancerGroup,
    LogicalRouter,
    Membership,
    NbRow,
    Owner,
)
from tests.integration.conftest import NbServer, Wire, elements
from tests.integration.test_reconciler import (
    LB_NAME,
    LBG,
    SVC,
    Snapshot,
    assert_nb_holds_exactly,
    replace,
    settle,
    topology,
    uuid_of,
)

NODE1 = Owner(names.OwnerType.NODE, "node1")
GR = names.gateway_router("node1")
SVC_A = Owner(names.OwnerType.SERVICE, "default/a")
SVC_B = Owner(names.OwnerType.SERVICE, "default/b")
LB_A = names.load_balancer("default", "a", "tcp")
LB_B = names.load_balancer("default", "b", "tcp")
IN_LBG = LoadBalancerGroup.membership(LBG)
ON_GR = LogicalRouter.membership(GR)


def cluster() -> list[NbRow]:
    return [LogicalRouter(owner=CLUSTER, name=names.CLUSTER_ROUTER),
            LoadBalancerGroup(name=LBG)]


def gateway() -> list[NbRow]:
    return [LogicalRouter(owner=NODE1, name=GR, options={"chassis": "node1"},
                          load_balancer_groups=frozenset({LBG}))]


def service(owner: Owner, name: str, vip: str, *member_of: Membership) -> list[NbRow]:
    return [LoadBalancer(owner=owner, name=name, vips={f"{vip}:80": "10.16.0.5:8080"},
                         member_of=frozenset(member_of))]


def members(server: NbServer, table: str, name: str) -> set[str]:
    snap = Snapshot(server)
    return snap.names_of(snap.named(table, name)["load_balancer"])


@pytest.fixture
def hand_lb(nb_server: NbServer, nb: NbConnection, reconciler: Reconciler) -> str:
    """Cluster and node1's rows, Service b in the group and on GR_node1, and a hand-made LB
    in both."""
    reconciler.reconcile([*cluster(), *gateway(), *service(SVC_B, LB_B, "10.96.0.2",
                                                           IN_LBG, ON_GR)])
    nb_server.nbctl("lb-add", "hand-lb", "10.96.99.1:80", "10.16.0.99:80")
    nb_server.nbctl("add", "Load_Balancer_Group", LBG, "load_balancer",
                    uuid_of(nb_server, "Load_Balancer", "hand-lb"))
    nb_server.nbctl("lr-lb-add", GR, "hand-lb")
    settle(nb, nb_server)
    return "hand-lb"


def test_joins_and_leaves_are_mutations_that_keep_other_members(
        nb_server: NbServer, reconciler: Reconciler, hand_lb: str, wire: Wire) -> None:
    both = {LB_B, hand_lb}

    wire.mark()
    result = reconciler.reconcile(service(SVC_A, LB_A, "10.96.0.1", IN_LBG, ON_GR),
                                  owners={SVC_A})
    assert [c.row.key for c in result.creates] == [LB_A] and not result.updates
    assert members(nb_server, "Load_Balancer_Group", LBG) == {LB_A, *both}
    assert members(nb_server, "Logical_Router", GR) == {LB_A, *both}
    # One transaction: the LB inserted, then one mutate insert per container, one element each.
    assert len(wire.transacts) == 1
    for table in ("Load_Balancer_Group", "Logical_Router"):
        ((how, value),) = wire.writes_of(table, "load_balancer")
        assert how == "insert" and len(elements(value)) == 1

    # Leave the router, stay in the group: one mutate delete of one element.
    wire.mark()
    result = reconciler.reconcile(service(SVC_A, LB_A, "10.96.0.1", IN_LBG), owners={SVC_A})
    (update,) = result.updates
    assert update.leaves == {ON_GR} and not update.joins and not update.columns
    assert [w[0] for w in wire.writes_of("Logical_Router", "load_balancer")] == ["delete"]
    assert not wire.writes_of("Load_Balancer_Group", "load_balancer")
    assert members(nb_server, "Logical_Router", GR) == both
    assert members(nb_server, "Load_Balancer_Group", LBG) == {LB_A, *both}

    # The Service goes: its LB is deleted and leaves the group; b and the hand LB stay.
    wire.mark()
    result = reconciler.reconcile([], owners={SVC_A})
    assert [d.row.key for d in result.deletes] == [LB_A]
    assert [w[0] for w in wire.writes_of("Load_Balancer_Group", "load_balancer")] == ["delete"]
    assert members(nb_server, "Load_Balancer_Group", LBG) == both
    assert members(nb_server, "Logical_Router", GR) == both
    assert Snapshot(nb_server).named("Load_Balancer", hand_lb)["external_ids"] == {}

    # The containers' owners never saw any of it.
    assert not reconciler.reconcile(cluster(), owners={CLUSTER})
    assert not reconciler.reconcile(gateway(), owners={NODE1})
    assert members(nb_server, "Load_Balancer_Group", LBG) == both


def test_member_deleted_while_another_joins_leaves_no_reference_behind(
        nb_server: NbServer, reconciler: Reconciler, hand_lb: str) -> None:
    """One transaction deletes b's LB and adds a's to the same containers: both mutate the
    containers' columns, and no reference to the deleted row is left."""
    rows = service(SVC_A, LB_A, "10.96.0.1", IN_LBG, ON_GR)
    result = reconciler.reconcile(rows, owners={SVC_A, SVC_B})
    assert [c.row.key for c in result.creates] == [LB_A]
    assert [d.row.key for d in result.deletes] == [LB_B]
    assert not Snapshot(nb_server).dangling()
    for table, name in (("Load_Balancer_Group", LBG), ("Logical_Router", GR)):
        assert members(nb_server, table, name) == {LB_A, hand_lb}
    assert not reconciler.reconcile(rows, owners={SVC_A, SVC_B})


def test_service_lb_joins_cluster_group_and_leaves_when_reconciled_to_nothing(
        nb_server: NbServer, reconciler: Reconciler, wire: Wire) -> None:
    reconciler.reconcile(topology())  # the Service default/web's LB is in the group
    lb_c = names.load_balancer("default", "c", "udp")
    svc_c = Owner(names.OwnerType.SERVICE, "default/c")
    rows = [LoadBalancer(owner=svc_c, name=lb_c, protocol="udp",
                         vips={"10.96.0.53:53": "10.16.0.6:53"}, member_of={IN_LBG})]

    wire.mark()
    assert reconciler.reconcile(rows, owners={svc_c}).creates
    assert members(nb_server, "Load_Balancer_Group", LBG) == {LB_NAME, lb_c}
    # A new Service costs its LB plus one mutation of the group, nothing of the Cluster's.
    ops = wire.ops()
    assert sorted(op["op"] for op in ops) == ["insert", "mutate"]
    assert [op["table"] for op in ops if op["op"] == "mutate"] == ["Load_Balancer_Group"]
    assert not reconciler.reconcile(rows, owners={svc_c})

    reconciler.reconcile([], owners={svc_c})
    assert members(nb_server, "Load_Balancer_Group", LBG) == {LB_NAME}
    assert not Snapshot(nb_server).has("Load_Balancer", lb_c)
    assert not reconciler.reconcile(topology())


def test_full_reconcile_converges_with_memberships(nb_server: NbServer, nb: NbConnection,
                                                   reconciler: Reconciler) -> None:
    """Unscoped, in any order, containers created in the same transaction as their members;
    membership drift (a kovn LB taken out by hand, or put somewhere by hand) is repaired."""
    desired = [*replace(topology(), LB_NAME, member_of={IN_LBG, ON_GR}), *gateway(),
               *service(SVC_A, LB_A, "10.96.0.1", IN_LBG)]
    desired.reverse()  # members before their containers
    result = reconciler.reconcile(desired)
    assert len(result.creates) == len(desired)
    assert_nb_holds_exactly(nb_server, desired)
    for _ in range(2):  # the same desired rows twice: an empty plan
        assert not reconciler.reconcile(desired)
        assert not reconciler.plan(desired)

    lb_a = uuid_of(nb_server, "Load_Balancer", LB_A)
    nb_server.nbctl("remove", "Load_Balancer_Group", LBG, "load_balancer", lb_a)
    nb_server.nbctl("lr-add", "hand-router")
    nb_server.nbctl("lr-lb-add", "hand-router", LB_NAME)
    settle(nb, nb_server)
    drift = reconciler.plan(desired)
    assert {(u.row.key, u.joins, u.leaves) for u in drift.updates} == {
        (LB_A, frozenset({IN_LBG}), frozenset()),
        (LB_NAME, frozenset(), frozenset({LogicalRouter.membership("hand-router")}))}
    reconciler.reconcile(desired)
    assert_nb_holds_exactly(nb_server, desired)
    assert Snapshot(nb_server).named("Logical_Router", "hand-router")["load_balancer"] == []
    assert not reconciler.reconcile(desired)


def test_owner_scoped_observe_sees_memberships(reconciler: Reconciler) -> None:
    reconciler.reconcile([*topology(), *gateway(),
                          *service(SVC_A, LB_A, "10.96.0.1", IN_LBG, ON_GR)])
    (seen,) = reconciler.observe({SVC_A})
    assert seen.row.member_of == {IN_LBG, ON_GR}
    (web,) = reconciler.observe({SVC})
    assert web.row.member_of == {IN_LBG}
    # The group's own row says nothing about its members.
    group = [o for o in reconciler.observe({CLUSTER}) if o.row.TABLE == "Load_Balancer_Group"]
    assert [o.row for o in group] == [LoadBalancerGroup(name=LBG)]


def test_node_owned_lb_group(nb_server: NbServer, reconciler: Reconciler) -> None:
    """A per-node group is owned by its Node through its name alone."""
    group = names.node_lb_group("node1")
    reconciler.reconcile(cluster(), owners={CLUSTER})
    rows = [LoadBalancerGroup(owner=NODE1, name=group), *gateway()]
    reconciler.reconcile(rows, owners={NODE1})
    in_node = LoadBalancerGroup.membership(group)
    reconciler.reconcile(service(SVC_A, LB_A, "10.96.0.1", in_node), owners={SVC_A})
    assert members(nb_server, "Load_Balancer_Group", group) == {LB_A}
    assert {o.row.key for o in reconciler.observe({NODE1})} == {group, GR}
    assert not reconciler.reconcile(rows, owners={NODE1})
    # The node goes: so does its group, and with it the membership (OVSDB drops the weak ref).
    reconciler.reconcile([], owners={NODE1})
    assert not Snapshot(nb_server).has("Load_Balancer_Group", group)
    (seen,) = reconciler.observe({SVC_A})
    assert seen.row.member_of == frozenset()


def test_membership_in_a_missing_container_fails_and_writes_nothing(
        nb_server: NbServer, reconciler: Reconciler) -> None:
    reconciler.reconcile(cluster())
    before = Snapshot(nb_server)
    rows = service(SVC_A, LB_A, "10.96.0.1", IN_LBG, LogicalRouter.membership("GR_nowhere"))
    with pytest.raises(NorthboundError, match="'GR_nowhere', which does not exist"):
        reconciler.reconcile(rows, owners={SVC_A})
    assert Snapshot(nb_server) == before
