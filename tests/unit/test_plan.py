"""northbound.plan.plan(desired, actual): pure and table-driven, no NB involved."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from northbound import membership, names
from northbound.plan import (
    ELEMENT_WRITE_MIN,
    Delete,
    MapDiff,
    Observed,
    Plan,
    SetDiff,
    Update,
    diff_row,
    element_diff,
    plan,
)
from northbound.rows import (
    ACL,
    CONTAINMENT,
    NAT,
    REFERENCES,
    AddressSet,
    LoadBalancer,
    LoadBalancerGroup,
    LogicalRouter,
    LogicalRouterPort,
    LogicalSwitch,
    LogicalSwitchPort,
    NbRow,
    Owner,
    ParentRef,
    PortGroup,
    QoS,
    StaticRoute,
)

POD_A = Owner(names.OwnerType.POD, "default/a")
POD_B = Owner(names.OwnerType.POD, "default/b")
NP = Owner(names.OwnerType.NETWORK_POLICY, "default/np")
SUBNET = Owner(names.OwnerType.SUBNET, "s1")
SVC = Owner(names.OwnerType.SERVICE, "default/web")

LS1 = LogicalSwitch(owner=SUBNET, name="s1")
LS2 = LogicalSwitch(owner=SUBNET, name="s2")
LR = LogicalRouter(owner=SUBNET, name="r")
LRP = LogicalRouterPort(owner=SUBNET, name="r-s1", router="r", mac="0a:00:00:00:00:01",
                        networks=("10.0.0.1/24",))
PORT_A = LogicalSwitchPort(owner=POD_A, name="default_a", switch="s1",
                           addresses=("0a:00:00:00:00:05 10.0.0.5",),
                           options={"requested-chassis": "n1", "iface-id-ver": "u1"})
PORT_B = LogicalSwitchPort(owner=POD_B, name="default_b", switch="s1",
                           addresses=("0a:00:00:00:00:06 10.0.0.6",))
PG = PortGroup(owner=NP, name="pg", ports=frozenset({"default_a"}))
PG_ACL = ACL(owner=NP, port_group="pg", direction="to-lport", priority=1001,
             match="outport == @pg && ip4", action="allow-related")
AS = AddressSet(owner=NP, name="as", addresses=("10.0.0.5",))
LB = LoadBalancer(owner=SVC, name="Service_default/web_TCP", vips={"10.96.0.1:80": "10.0.0.5:80"})
ROUTE = StaticRoute(owner=SUBNET, router="r", ip_prefix="10.0.0.0/24", nexthop="100.64.0.2")
SNAT = NAT(owner=SUBNET, router="r", type="snat", external_ip="192.0.2.1",
           logical_ip="10.0.0.0/24")
QOS = QoS(owner=POD_A, switch="s1", direction="from-lport", priority=2000,
          match='inport == "default_a"', bandwidth={"rate": 1000})

# Large columns (>= ELEMENT_WRITE_MIN elements) and memberships in other owners' containers.
IPS = tuple(f"10.0.1.{i}" for i in range(20))
BIG_AS = AddressSet(owner=NP, name="ns_as", addresses=IPS)
VIPS = {f"10.96.0.{i}:80": f"10.0.0.{i}:8080" for i in range(10)}
BIG_LB = LoadBalancer(owner=SVC, name="Service_default/big_TCP", vips=VIPS)
IN_LBG = LoadBalancerGroup.membership(names.CLUSTER_LB_GROUP)
ON_GR1 = LogicalRouter.membership(names.gateway_router("n1"))
ON_GR2 = LogicalRouter.membership(names.gateway_router("n2"))


def seen(row: NbRow, uuid: str, parent_uuid: str | None = None) -> Observed:
    """`row` as observe() would report it: rebuilt through from_db, like a real NB read."""
    parent = row.parent()
    refs = {col: ns for col, (_t, ns) in row.references().items()}
    back = type(row).from_db(row.columns(), parent.name if parent else None, refs,
                             row.member_of)
    if parent_uuid is None and parent is not None:
        parent_uuid = f"uuid-{parent.name}"
    return Observed(back, uuid, parent_uuid)


def with_(row: NbRow, **changes: Any) -> NbRow:
    return dataclasses.replace(row, **changes)


@dataclass
class Case:
    id: str
    desired: list[NbRow]
    actual: list[Observed]
    creates: list[tuple[str, str]] = field(default_factory=list)
    """idents of the rows to create, in plan order"""
    updates: list[dict[str, Any]] = field(default_factory=list)
    """per update: uuid, columns, refs, reparent (only what is given is compared)"""
    deletes: list[str] = field(default_factory=list)
    """uuids, in plan order"""


CASES = [
    Case("empty", desired=[], actual=[]),
    Case("create-only",
         desired=[PORT_A, LS1, PG_ACL, PG, LB],
         actual=[],
         # tables in rows.TABLES order so containers come first
         creates=[LS1.ident, PORT_A.ident, LB.ident, PG.ident, PG_ACL.ident]),
    Case("create-missing-next-to-existing",
         desired=[LS1, PORT_A, PORT_B],
         actual=[seen(LS1, "u-ls1"), seen(PORT_A, "u-a")],
         creates=[PORT_B.ident]),
    Case("delete-only",
         desired=[],
         actual=[seen(AS, "u-as"), seen(LB, "u-lb")],
         deletes=["u-lb", "u-as"]),
    Case("delete-not-desired-keep-desired",
         desired=[LS1, PORT_A],
         actual=[seen(LS1, "u-ls1"), seen(PORT_A, "u-a"), seen(PORT_B, "u-b")],
         deletes=["u-b"]),
    Case("identical",
         desired=[LS1, LR, LRP, PORT_A, PORT_B, PG, PG_ACL, AS, LB, ROUTE, SNAT, QOS],
         actual=[seen(r, f"u{i}") for i, r in
                 enumerate([LS1, LR, LRP, PORT_A, PORT_B, PG, PG_ACL, AS, LB, ROUTE, SNAT, QOS])]),
    Case("identical-desired-duplicate-is-fine",
         desired=[LS1, LS1, PORT_A],
         actual=[seen(LS1, "u-ls1"), seen(PORT_A, "u-a")]),
    Case("update-scalar",
         desired=[with_(PORT_A, type="localport")],
         actual=[seen(PORT_A, "u-a")],
         updates=[dict(uuid="u-a", columns={"type": "localport"}, refs={}, reparent=None)]),
    Case("update-set",
         desired=[with_(PORT_A, addresses=("0a:00:00:00:00:07 10.0.0.7",))],
         actual=[seen(PORT_A, "u-a")],
         updates=[dict(uuid="u-a", columns={"addresses": ["0a:00:00:00:00:07 10.0.0.7"]})]),
    Case("update-optional-to-empty",
         desired=[with_(PORT_A, enabled=None)],
         actual=[seen(with_(PORT_A, enabled=False), "u-a")],
         updates=[dict(uuid="u-a", columns={"enabled": []})]),
    Case("update-map-key-removed",
         desired=[with_(PORT_A, options={"requested-chassis": "n1"})],
         actual=[seen(PORT_A, "u-a")],
         # the full new map, so apply replaces it; the stale key is not in it
         updates=[dict(uuid="u-a", columns={"options": {"requested-chassis": "n1"}})]),
    Case("update-map-value-changed",
         desired=[with_(LB, vips={"10.96.0.1:80": "10.0.0.5:80,10.0.0.6:80"})],
         actual=[seen(LB, "u-lb")],
         updates=[dict(uuid="u-lb",
                       columns={"vips": {"10.96.0.1:80": "10.0.0.5:80,10.0.0.6:80"}})]),
    Case("update-external-ids",
         desired=[with_(PORT_A, extra_ids={names.POD_UID_KEY: "u2"})],
         actual=[seen(PORT_A, "u-a")],
         updates=[dict(uuid="u-a", columns={"external_ids": {
             names.OWNER_TYPE_KEY: "Pod", names.OWNER_KEY: "default/a",
             names.POD_UID_KEY: "u2"}})]),
    Case("ref-set-add-and-remove",
         desired=[with_(PG, ports=frozenset({"default_b", "default_c"}))],
         actual=[seen(with_(PG, ports=frozenset({"default_a", "default_b"})), "u-pg")],
         updates=[dict(uuid="u-pg", columns={}, reparent=None, refs={
             "ports": ("Logical_Switch_Port", frozenset({"default_c"}),
                       frozenset({"default_a"}))})]),
    Case("ref-set-emptied",
         desired=[with_(LS1, load_balancers=frozenset())],
         actual=[seen(with_(LS1, load_balancers=frozenset({LB.name})), "u-ls1")],
         updates=[dict(uuid="u-ls1", columns={}, refs={
             "load_balancer": ("Load_Balancer", frozenset(), frozenset({LB.name}))})]),
    Case("reparent-port-to-other-switch",
         desired=[LS1, LS2, with_(PORT_A, switch="s2")],
         actual=[seen(LS1, "u-ls1"), seen(LS2, "u-ls2"), seen(PORT_A, "u-a", "u-ls1")],
         updates=[dict(uuid="u-a", columns={}, refs={},
                       reparent=(ParentRef("Logical_Switch", "s1", "ports"),
                                 ParentRef("Logical_Switch", "s2", "ports")),
                       old_parent_uuid="u-ls1")]),
    Case("reparent-and-change-columns",
         desired=[with_(PORT_A, switch="s2", addresses=("x",))],
         actual=[seen(PORT_A, "u-a", "u-ls1")],
         updates=[dict(uuid="u-a", columns={"addresses": ["x"]},
                       reparent=(ParentRef("Logical_Switch", "s1", "ports"),
                                 ParentRef("Logical_Switch", "s2", "ports")))]),
    Case("duplicates-in-actual-extra-deleted",
         desired=[LS1],
         actual=[seen(LS1, "u-2"), seen(LS1, "u-1"), seen(LS1, "u-3")],
         deletes=["u-2", "u-3"]),  # the first by UUID stays
    Case("duplicate-unnamed-rows-in-actual",
         desired=[PG, PG_ACL],
         actual=[seen(PG, "u-pg"), seen(PG_ACL, "u-acl-1", "u-pg"),
                 seen(PG_ACL, "u-acl-2", "u-pg")],
         deletes=["u-acl-2"]),
    Case("duplicates-in-actual-kept-one-updated",
         desired=[with_(AS, addresses=("10.0.0.9",))],
         actual=[seen(AS, "u-b"), seen(AS, "u-a")],
         updates=[dict(uuid="u-a", columns={"addresses": ["10.0.0.9"]})],
         deletes=["u-b"]),
    Case("unnamed-key-change-is-delete-plus-create",
         desired=[with_(PG_ACL, match="outport == @pg && ip6")],
         actual=[seen(PG_ACL, "u-acl", "u-pg")],
         creates=[with_(PG_ACL, match="outport == @pg && ip6").ident],
         deletes=["u-acl"]),
    Case("unnamed-non-key-change-is-update",
         desired=[with_(PG_ACL, action="drop"), with_(QOS, bandwidth={"rate": 2000})],
         actual=[seen(PG_ACL, "u-acl", "u-pg"), seen(QOS, "u-qos", "u-ls1")],
         updates=[dict(uuid="u-acl", columns={"action": "drop"}),
                  dict(uuid="u-qos", columns={"bandwidth": {"rate": 2000}})]),
    Case("explicit-row-key-matches-observed",
         desired=[with_(SNAT, row_key="nat-1")],
         actual=[seen(with_(SNAT, row_key="nat-1", external_ip="192.0.2.2"), "u-nat", "u-r")],
         updates=[dict(uuid="u-nat", columns={"external_ip": "192.0.2.1"})]),
    Case("owner-change-is-update",
         desired=[with_(PORT_A, owner=POD_B)],
         actual=[seen(PORT_A, "u-a")],
         updates=[dict(uuid="u-a", columns={"external_ids": POD_B.ids()})]),
    # --- large set and map columns change by element ---------------------------------------
    Case("big-set-one-added",
         desired=[with_(BIG_AS, addresses=(*IPS, "10.0.2.1"))],
         actual=[seen(BIG_AS, "u-as")],
         updates=[dict(uuid="u-as", columns={}, elements={
             "addresses": SetDiff(frozenset({"10.0.2.1"}), frozenset())})]),
    Case("big-set-one-added-one-removed",
         desired=[with_(BIG_AS, addresses=(*IPS[1:], "10.0.2.1"))],
         actual=[seen(BIG_AS, "u-as")],
         updates=[dict(uuid="u-as", columns={}, elements={
             "addresses": SetDiff(frozenset({"10.0.2.1"}), frozenset({IPS[0]}))})]),
    Case("big-set-mostly-replaced-is-written-whole",
         desired=[with_(BIG_AS, addresses=(*IPS[:5], *(f"10.0.3.{i}" for i in range(15))))],
         actual=[seen(BIG_AS, "u-as")],
         updates=[dict(uuid="u-as", elements={}, columns={"addresses": sorted(
             (*IPS[:5], *(f"10.0.3.{i}" for i in range(15))))})]),
    Case("big-set-emptied-is-written-whole",
         desired=[with_(BIG_AS, addresses=())],
         actual=[seen(BIG_AS, "u-as")],
         updates=[dict(uuid="u-as", elements={}, columns={"addresses": []})]),
    Case("small-set-is-written-whole",
         desired=[with_(AS, addresses=("10.0.0.5", "10.0.0.6"))],
         actual=[seen(AS, "u-as")],
         updates=[dict(uuid="u-as", elements={},
                       columns={"addresses": ["10.0.0.5", "10.0.0.6"]})]),
    Case("big-map-one-key-added",
         desired=[with_(BIG_LB, vips={**VIPS, "10.96.1.1:80": "10.0.0.1:80"})],
         actual=[seen(BIG_LB, "u-lb")],
         updates=[dict(uuid="u-lb", columns={}, elements={
             "vips": MapDiff({"10.96.1.1:80": "10.0.0.1:80"}, frozenset())})]),
    Case("big-map-one-value-changed",
         desired=[with_(BIG_LB, vips={**VIPS, "10.96.0.3:80": "10.0.0.3:8080,10.0.0.4:8080"})],
         actual=[seen(BIG_LB, "u-lb")],
         updates=[dict(uuid="u-lb", columns={}, elements={
             "vips": MapDiff({"10.96.0.3:80": "10.0.0.3:8080,10.0.0.4:8080"}, frozenset())})]),
    Case("big-map-one-key-removed-and-options-whole",
         desired=[with_(BIG_LB, vips={k: v for k, v in VIPS.items() if k != "10.96.0.0:80"},
                        options={"reject": "true"})],
         actual=[seen(BIG_LB, "u-lb")],
         updates=[dict(uuid="u-lb", columns={"options": {"reject": "true"}}, elements={
             "vips": MapDiff({}, frozenset({"10.96.0.0:80"}))})]),
    # --- memberships in containers of other owners ------------------------------------------
    Case("create-member",
         desired=[with_(LB, member_of={IN_LBG, ON_GR1})],
         actual=[],
         creates=[LB.ident]),
    Case("member-unchanged",
         desired=[with_(LB, member_of={IN_LBG, ON_GR1})],
         actual=[seen(with_(LB, member_of={ON_GR1, IN_LBG}), "u-lb")]),
    Case("member-joins",
         desired=[with_(LB, member_of={IN_LBG})],
         actual=[seen(LB, "u-lb")],
         updates=[dict(uuid="u-lb", columns={}, refs={}, elements={},
                       joins=frozenset({IN_LBG}), leaves=frozenset())]),
    Case("member-moves-between-routers-stays-in-group",
         desired=[with_(LB, member_of={IN_LBG, ON_GR2})],
         actual=[seen(with_(LB, member_of={IN_LBG, ON_GR1}), "u-lb")],
         updates=[dict(uuid="u-lb", columns={}, joins=frozenset({ON_GR2}),
                       leaves=frozenset({ON_GR1}))]),
    Case("member-leaves-all",
         desired=[LB],
         actual=[seen(with_(LB, member_of={IN_LBG, ON_GR1}), "u-lb")],
         updates=[dict(uuid="u-lb", columns={}, joins=frozenset(),
                       leaves=frozenset({IN_LBG, ON_GR1}))]),
    Case("member-changes-columns-and-joins",
         desired=[with_(BIG_LB, vips={**VIPS, "10.96.1.1:80": "x"}, member_of={IN_LBG})],
         actual=[seen(BIG_LB, "u-lb")],
         updates=[dict(uuid="u-lb", columns={}, joins=frozenset({IN_LBG}),
                       elements={"vips": MapDiff({"10.96.1.1:80": "x"}, frozenset())})]),
    Case("member-deleted",
         desired=[],
         actual=[seen(with_(LB, member_of={IN_LBG}), "u-lb")],
         deletes=["u-lb"]),
    Case("create-update-delete-together",
         desired=[LS1, with_(PORT_A, type="router"), AS],
         actual=[seen(LS1, "u-ls1"), seen(PORT_A, "u-a"), seen(PORT_B, "u-b"), seen(LB, "u-lb")],
         creates=[AS.ident],
         updates=[dict(uuid="u-a", columns={"type": "router"})],
         deletes=["u-b", "u-lb"]),
]


def _check_update(update: Update, expected: dict[str, Any]) -> None:
    for attr, value in expected.items():
        assert getattr(update, attr) == value, attr


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan(case: Case) -> None:
    result = plan(case.desired, case.actual)
    assert [c.row.ident for c in result.creates] == case.creates
    assert [u.uuid for u in result.updates] == [u["uuid"] for u in case.updates]
    for update, expected in zip(result.updates, case.updates, strict=True):
        _check_update(update, expected)
        assert update.row in case.desired  # the update carries the desired row
    assert [d.uuid for d in result.deletes] == case.deletes
    assert bool(result) is bool(case.creates or case.updates or case.deletes)
    assert result.summary() == (
        f"{len(case.creates)} creates, {len(case.updates)} updates, {len(case.deletes)} deletes"
    )


@pytest.mark.parametrize(
    ("desired", "match"),
    [
        ([PORT_A, with_(PORT_A, addresses=("other",))], "Logical_Switch_Port key 'default_a'"),
        ([LS1, with_(LS1, owner=POD_A)], "Logical_Switch key 's1'"),
        ([PG_ACL, with_(PG_ACL, action="drop")], "ACL key 'pg:pg|to-lport|1001|"),
        ([SNAT, with_(SNAT, row_key="n"), with_(ROUTE, row_key="n"), with_(ROUTE, row_key="n",
                                                                           nexthop="x")],
         "Logical_Router_Static_Route key 'n'"),
    ],
    ids=["lsp", "switch-owner", "acl", "explicit-key"],
)
def test_conflicting_desired_duplicates_raise(desired: list[NbRow], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan(desired, [])


def test_same_key_in_different_tables_is_no_duplicate() -> None:
    # A NAT and a route may share an explicit key: identity is (table, key).
    result = plan([with_(SNAT, row_key="k"), with_(ROUTE, row_key="k")], [])
    assert len(result.creates) == 2


def test_deletes_children_first() -> None:
    everything = [LS1, LR, LRP, PORT_A, PORT_B, PG, PG_ACL, AS, LB, ROUTE, SNAT, QOS]
    actual = [seen(r, f"u-{i:02}") for i, r in enumerate(everything)]
    result = plan([], actual)
    assert {d.uuid for d in result.deletes} == {o.uuid for o in actual}
    has_parent = [d.row.parent() is not None for d in result.deletes]
    # every child (row held by a container) is deleted before any root row
    assert has_parent == sorted(has_parent, reverse=True)
    assert sum(has_parent) == 7  # LRP, 2 LSPs, ACL, route, NAT, QoS
    # and each child keeps the handle of its container so apply() can detach it
    for d in result.deletes:
        if d.row.parent() is not None:
            assert d.parent_uuid == f"uuid-{d.row.parent().name}"


def test_plan_is_pure_and_deterministic() -> None:
    desired = [LS1, LS2, with_(PORT_A, switch="s2"), AS, LB]
    actual = [seen(PORT_A, "u-a", "u-ls1"), seen(PORT_B, "u-b"), seen(LS1, "u-ls1")]
    first = plan(desired, actual)
    assert plan(list(reversed(desired)), list(reversed(actual))) == first
    assert plan(iter(desired), iter(actual)) == first  # any iterable


def test_empty_plan_is_falsy() -> None:
    assert not Plan()
    assert Plan(deletes=(Delete("u", LS1),))


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [
        (PORT_A, PORT_A, None),
        (PORT_A, with_(PORT_A, addresses=tuple(reversed(PORT_A.addresses))), None),
        (PORT_A, with_(PORT_A, options=dict(reversed(list(PORT_A.options.items())))), None),
        (PORT_A, with_(PORT_A, options={**PORT_A.options, "new": "1"}), {"options"}),
        (PORT_A, with_(PORT_A, enabled=True), {"enabled"}),
        (LS1, with_(LS1, other_config={"subnet": "10.0.0.0/24"}), {"other_config"}),
    ],
    ids=["same", "set-order", "map-order", "map-key-added", "optional-set", "map-on-switch"],
)
def test_diff_row(old: NbRow, new: NbRow, changed: set[str] | None) -> None:
    update = diff_row(seen(old, "u"), new)
    if changed is None:
        assert update is None
    else:
        assert update is not None and set(update.columns) == changed
        for col in changed:
            assert update.columns[col] == new.columns()[col]


def test_container_holding_hand_made_rows_is_kept_not_deleted() -> None:
    """OVSDB deletes a container's children with it; kovn keeps a container that holds rows
    it does not own, and lets go of the kovn rows it references so those can still go."""
    switch = LogicalSwitch(owner=SUBNET, name="s1", load_balancers=frozenset({LB.name}))
    holder = Observed(switch, "u-switch", None, foreign_children=2)
    result = plan([], [holder, seen(LB, "u-lb"), seen(PORT_A, "u-a", "u-switch")])
    assert [k.row for k in result.kept] == [switch]
    assert {d.uuid for d in result.deletes} == {"u-lb", "u-a"}
    (release,) = result.updates
    assert release.uuid == "u-switch"
    assert release.refs == {"load_balancer": ("Load_Balancer", frozenset(), frozenset({LB.name}))}
    assert "1 kept" in result.summary()
    # Nothing left to do once it holds only what it held: kept rows alone are no change.
    idle = plan([], [Observed(dataclasses.replace(switch, load_balancers=frozenset()),
                              "u-switch", None, foreign_children=2)])
    assert not idle and len(idle.kept) == 1


# --- element diffs -------------------------------------------------------------------------------
_TEN = [f"e{i}" for i in range(10)]
_MAP = {f"k{i}": str(i) for i in range(10)}


@pytest.mark.parametrize(
    ("kind", "old", "new", "expected"),
    [
        ("set", _TEN, [*_TEN, "x"], SetDiff(frozenset({"x"}), frozenset())),
        ("set", _TEN, _TEN[1:], SetDiff(frozenset(), frozenset({"e0"}))),
        ("set", _TEN, [*_TEN[1:], "x"], SetDiff(frozenset({"x"}), frozenset({"e0"}))),
        ("set", [], _TEN, None),  # nothing to keep: whole
        ("set", _TEN, [], None),  # emptied: "[]" is the smallest write
        ("set", _TEN[:4], [*_TEN[:4], "x"], None),  # small: whole
        ("set", _TEN, [f"y{i}" for i in range(10)], None),  # replaced: whole
        # half changed: a diff of 10 for a value of 10 is no saving
        ("set", _TEN, [*_TEN[:5], *(f"y{i}" for i in range(5))], None),
        ("map", _MAP, {**_MAP, "new": "n"}, MapDiff({"new": "n"}, frozenset())),
        ("map", _MAP, {**_MAP, "k3": "changed"}, MapDiff({"k3": "changed"}, frozenset())),
        ("map", _MAP, {k: v for k, v in _MAP.items() if k != "k0"} | {"k1": "c"},
         MapDiff({"k1": "c"}, frozenset({"k0"}))),
        ("map", {k: v for k, v in list(_MAP.items())[:3]}, {"k0": "0"}, None),  # small
        ("scalar", "a", "b", None),
        ("optional", ["a"], ["b"], None),
    ],
    ids=["set-add", "set-remove", "set-add-remove", "set-from-empty", "set-to-empty",
         "set-small", "set-replaced", "set-half", "map-add", "map-value", "map-add-remove",
         "map-small", "scalar", "optional"],
)
def test_element_diff(kind: str, old: Any, new: Any, expected: Any) -> None:
    assert element_diff(kind, old, new) == expected
    assert element_diff(kind, old, new, element_min=None) is None  # whole writes forced


def test_element_diff_threshold() -> None:
    below = [f"e{i}" for i in range(ELEMENT_WRITE_MIN - 2)]
    assert element_diff("set", below, [*below, "x"]) is None
    at = [f"e{i}" for i in range(ELEMENT_WRITE_MIN - 1)]
    assert element_diff("set", at, [*at, "x"]) == SetDiff(frozenset({"x"}), frozenset())


@pytest.mark.parametrize("n", [100, 1_000, 5_000])
def test_one_element_change_is_one_element_whatever_the_size(n: int) -> None:
    """One pod joining a namespace's address set: the update carries one address, not n."""
    ips = tuple(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(n))
    old = AddressSet(owner=NP, name="ns", addresses=ips)
    (update,) = plan([with_(old, addresses=(*ips, "10.255.0.1"))], [seen(old, "u")]).updates
    assert update.columns == {}
    assert update.elements == {"addresses": SetDiff(frozenset({"10.255.0.1"}), frozenset())}
    whole = plan([with_(old, addresses=(*ips, "10.255.0.1"))], [seen(old, "u")],
                 element_min=None)
    assert len(whole.updates[0].columns["addresses"]) == n + 1
    assert not whole.updates[0].elements


def test_element_min_none_writes_columns_whole() -> None:
    update = diff_row(seen(BIG_AS, "u"), with_(BIG_AS, addresses=(*IPS, "x")), element_min=None)
    assert update is not None and not update.elements
    assert update.columns == {"addresses": sorted((*IPS, "x"))}


# --- memberships ---------------------------------------------------------------------------------
def test_create_carries_the_memberships_to_join() -> None:
    lb = with_(LB, member_of={IN_LBG, ON_GR1})
    (create,) = plan([lb], []).creates
    assert create.row.member_of == {IN_LBG, ON_GR1}
    assert "member_of" not in create.row.columns()


def test_deleted_member_leaves_what_it_was_observed_in() -> None:
    """apply() takes a deleted row out of each container it was seen in (weak references
    would go by themselves; a strong one would make the delete fail)."""
    (delete,) = plan([], [seen(with_(LB, member_of={IN_LBG, ON_GR1}), "u-lb")]).deletes
    assert delete.row.member_of == {IN_LBG, ON_GR1}


def test_kept_row_leaves_its_containers() -> None:
    held = Observed(with_(LB, member_of={IN_LBG}), "u-lb", None, foreign_children=1)
    result = plan([], [held])
    assert [k.uuid for k in result.kept] == ["u-lb"] and not result.deletes
    (update,) = result.updates
    assert (update.uuid, update.leaves, update.joins, update.refs) == (
        "u-lb", frozenset({IN_LBG}), frozenset(), {})
    # once out, nothing more to do
    assert not plan([], [Observed(LB, "u-lb", None, foreign_children=1)])


def test_membership_plan_is_idempotent() -> None:
    desired = [with_(LB, member_of={IN_LBG, ON_GR1}), with_(BIG_AS, addresses=(*IPS, "x"))]
    assert not plan(desired, [seen(r, f"u{i}") for i, r in enumerate(desired)])


def test_duplicate_desired_rows_with_different_memberships_raise() -> None:
    with pytest.raises(ValueError, match="Load_Balancer key"):
        plan([with_(LB, member_of={IN_LBG}), with_(LB, member_of={ON_GR1})], [])


# --- one side per column -------------------------------------------------------------------------
def test_the_real_tables_keep_every_column_on_one_side() -> None:
    membership.check_one_side(REFERENCES, CONTAINMENT)
    sides = [set(membership.MEMBER_SIDE), set(REFERENCES), set(CONTAINMENT)]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    # the decisions, spelled out
    assert ("Load_Balancer_Group", "load_balancer") in membership.MEMBER_SIDE
    assert ("Logical_Router", "load_balancer") in membership.MEMBER_SIDE
    assert ("Port_Group", "ports") in REFERENCES
    assert ("Logical_Switch", "load_balancer_group") in REFERENCES
    assert ("Port_Group", "acls") in CONTAINMENT


@pytest.mark.parametrize(
    ("container_side", "containment", "message"),
    [
        ({("Logical_Router", "load_balancer"): "Load_Balancer"}, {},
         "Logical_Router.load_balancer is managed both from the member side"),
        ({}, {("Load_Balancer_Group", "load_balancer"): "Load_Balancer"},
         "Load_Balancer_Group.load_balancer is managed both from the member side"),
        ({("Port_Group", "acls"): "ACL"}, {("Port_Group", "acls"): "ACL"},
         "Port_Group.acls is managed both from the container side"),
    ],
    ids=["ref-field-on-member-side-column", "parent-field-on-member-side-column",
         "ref-and-parent"],
)
def test_a_column_on_two_sides_is_refused(container_side: dict[tuple[str, str], str],
                                          containment: dict[tuple[str, str], str],
                                          message: str) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        membership.check_one_side(container_side, containment)


def test_a_row_class_writing_a_member_side_column_does_not_import() -> None:
    """What rows.py's import-time check does with a class that breaks the rule."""
    from northbound.rows import _ref, field_specs

    @dataclass(frozen=True, kw_only=True)
    class BadRouter(NbRow):
        TABLE = "Logical_Router"
        name: str = ""
        load_balancers: frozenset[str] = _ref("load_balancer", "Load_Balancer")

    refs = {(BadRouter.TABLE, f.column): f.table for f in field_specs(BadRouter)
            if f.kind == "ref"}
    with pytest.raises(TypeError, match=r"Logical_Router\.load_balancer is managed both"):
        membership.check_one_side({**REFERENCES, **refs}, CONTAINMENT)
