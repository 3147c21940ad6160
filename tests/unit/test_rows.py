"""northbound.rows: column forms, row keys, ACL validation and the from_db round trip."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from northbound import names, rows
from northbound.rows import (
    ACL,
    DNS,
    NAT,
    AddressSet,
    ChassisTemplateVar,
    LoadBalancer,
    LoadBalancerGroup,
    LogicalRouter,
    LogicalRouterPort,
    LogicalSwitch,
    LogicalSwitchPort,
    Membership,
    NbRow,
    Owner,
    ParentRef,
    PortGroup,
    QoS,
    RouterPolicy,
    StaticRoute,
    SwitchACL,
)

POD = Owner(names.OwnerType.POD, "default/web-1")
SVC = Owner(names.OwnerType.SERVICE, "default/web")
NP = Owner(names.OwnerType.NETWORK_POLICY, "default/allow-web")
SUBNET = Owner(names.OwnerType.SUBNET, "ovn-default")
NODE = Owner(names.OwnerType.NODE, "node1")
POD_IDS = {"kovn.io/owner-type": "Pod", "kovn.io/owner": "default/web-1"}

# One fully populated row per type in rows.ROW_TYPES (test_samples_cover_every_row_type keeps
# this in step with ROW_TYPES).
SAMPLES: dict[type[NbRow], NbRow] = {
    LogicalSwitch: LogicalSwitch(
        owner=SUBNET, name="ovn-default", other_config={"subnet": "10.16.0.0/16"},
        load_balancers=frozenset({"Service_default/web_TCP"}),
        load_balancer_groups=frozenset({names.CLUSTER_LB_GROUP}),
    ),
    LogicalSwitchPort: LogicalSwitchPort(
        owner=POD, name="default_web-1", switch="ovn-default",
        addresses=("0a:58:0a:10:00:05 10.16.0.5",), port_security=("0a:58:0a:10:00:05 10.16.0.5",),
        options={"requested-chassis": "node1", "iface-id-ver": "uid-1"}, enabled=True,
        extra_ids={names.POD_UID_KEY: "uid-1"},
    ),
    LogicalRouter: LogicalRouter(
        owner=rows.CLUSTER, name="ovn-cluster", options={"mcast_relay": "false"},
        load_balancer_groups=frozenset({"clusterLBGroup"}),
    ),
    LogicalRouterPort: LogicalRouterPort(
        owner=SUBNET, name="ovn-cluster-ovn-default", router="ovn-cluster",
        mac="0a:58:0a:10:00:01", networks=("10.16.0.1/16", "fd00::1/64"), peer="x",
        options={"gateway_mtu": "1400"},
    ),
    StaticRoute: StaticRoute(
        owner=NODE, router="ovn-cluster", ip_prefix="10.16.0.0/24", nexthop="100.64.0.2",
        route_table="t1", policy="src-ip", output_port="ovn-cluster-join", options={"ecmp": "x"},
    ),
    RouterPolicy: RouterPolicy(
        owner=NODE, router="ovn-cluster", priority=1000, action="reroute",
        match='ip4.src == 10.16.0.0/16 && is_chassis_resident("rtoj-GR_node1")',
        nexthops=("100.64.0.2",), options={"pkt_mark": "1"},
    ),
    NAT: NAT(
        owner=SUBNET, router="ovn-cluster", type="snat", external_ip="192.0.2.10",
        logical_ip="10.16.0.0/16", logical_port="p1", external_mac="0a:00:00:00:00:01",
        options={"stateless": "false"},
    ),
    LoadBalancer: LoadBalancer(
        owner=SVC, name="Service_default/web_TCP",
        vips={"10.96.0.10:80": "10.16.0.5:8080,10.16.0.6:8080"}, protocol="tcp",
        options={"affinity_timeout": "10800"}, selection_fields=("ip_src", "ip_dst"),
        member_of={LoadBalancerGroup.membership(names.CLUSTER_LB_GROUP),
                   LogicalRouter.membership(names.gateway_router("node1"))},
    ),
    LoadBalancerGroup: LoadBalancerGroup(name=names.CLUSTER_LB_GROUP),
    PortGroup: PortGroup(
        owner=NP, name="kovn_np_default_allow_web",
        ports=frozenset({"default_web-1", "default_web-2"}),
    ),
    AddressSet: AddressSet(
        owner=NP, name="kovn_as_default_allow_web_ingress_0", addresses=("10.16.0.7", "10.16.0.6"),
    ),
    ACL: ACL(
        owner=NP, port_group="kovn_np_default_allow_web", direction="to-lport", priority=1001,
        match="outport == @kovn_np_default_allow_web && ip4", action="allow-related",
        name="np-allow", log=True, severity="info", options={"log-related": "true"},
    ),
    SwitchACL: SwitchACL(
        owner=SUBNET, switch="ovn-default", direction="from-lport", priority=1000,
        match="ip4.dst == 10.17.0.0/16", action="drop",
    ),
    QoS: QoS(
        owner=POD, switch="ovn-default", direction="from-lport", priority=2000,
        match='inport == "default_web-1"', bandwidth={"rate": 10000, "burst": 1000},
        action={"dscp": 10},
    ),
    ChassisTemplateVar: ChassisTemplateVar(owner=NODE, chassis="node1",
                                     variables={"NODE_EXTERNAL_IP": "198.51.100.11"}),
    DNS: DNS(
        owner=Owner(names.OwnerType.SERVICE, "default/web"), row_key="dns:default/web",
        records={"web.default.svc.cluster.local": "10.96.0.20"},
        member_of=frozenset({LogicalSwitch.membership("ovn-default", "dns_records")}),
    ),
    rows.Meter: rows.Meter(owner=rows.CLUSTER, name="kovn-acl-logging", fair=True),
    rows.MeterBand: rows.MeterBand(owner=rows.CLUSTER, meter="kovn-acl-logging", rate=20),
}


def test_samples_cover_every_row_type() -> None:
    assert set(SAMPLES) == set(rows.ROW_TYPES)
    assert tuple(dict.fromkeys(t.TABLE for t in rows.ROW_TYPES)) == rows.TABLES


# --- columns() forms -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("row", "expected"),
    [
        # optional -> list of 0 or 1, set -> sorted list, map -> dict
        (LogicalSwitchPort(owner=POD, name="p", switch="s"),
         {"name": "p", "type": "", "addresses": [], "port_security": [], "options": {},
          "enabled": [], "external_ids": POD_IDS}),
        (LogicalSwitchPort(owner=POD, name="p", switch="s", enabled=False,
                           addresses=("router",), options={"router-port": "rp"}),
         {"name": "p", "type": "", "addresses": ["router"], "port_security": [],
          "options": {"router-port": "rp"}, "enabled": [False], "external_ids": POD_IDS}),
        (LogicalSwitchPort(owner=POD, name="p", switch="s", enabled=True,
                           addresses=("b", "a", "c"), port_security=["z", "y"]),
         {"name": "p", "type": "", "addresses": ["a", "b", "c"], "port_security": ["y", "z"],
          "options": {}, "enabled": [True], "external_ids": POD_IDS}),
        (LoadBalancer(owner=POD, name="lb"),
         {"name": "lb", "vips": {}, "protocol": ["tcp"], "options": {}, "selection_fields": [],
          "external_ids": POD_IDS}),
        (LoadBalancer(owner=POD, name="lb", protocol=None, selection_fields=("ip_src",)),
         {"name": "lb", "vips": {}, "protocol": [], "options": {}, "selection_fields": ["ip_src"],
          "external_ids": POD_IDS}),
        (LogicalRouterPort(owner=POD, name="rp", router="r", mac="m", networks=("10.0.0.1/24",)),
         {"name": "rp", "mac": "m", "networks": ["10.0.0.1/24"], "peer": [], "options": {},
          "external_ids": POD_IDS}),
        (AddressSet(owner=POD, name="as", addresses=("10.0.0.3", "10.0.0.10", "10.0.0.2")),
         {"name": "as", "addresses": ["10.0.0.10", "10.0.0.2", "10.0.0.3"],
          "external_ids": POD_IDS}),
        # references and parents are not plain columns
        (PortGroup(owner=POD, name="pg", ports=frozenset({"p1"})),
         {"name": "pg", "external_ids": POD_IDS}),
        # Load_Balancer_Group has no external_ids column in the NB schema
        (LoadBalancerGroup(name="clusterLBGroup"), {"name": "clusterLBGroup"}),
        (QoS(owner=POD, switch="s", direction="to-lport", priority=5, match="ip4",
             bandwidth={"rate": 100}),
         {"direction": "to-lport", "priority": 5, "match": "ip4", "bandwidth": {"rate": 100},
          "action": {}, "external_ids": {**POD_IDS, "kovn.io/key": "s|to-lport|5|ip4"}}),
    ],
    ids=["lsp-defaults", "lsp-optional-false", "lsp-sets-sorted", "lb-defaults", "lb-no-protocol",
         "lrp", "address-set", "port-group", "lb-group", "qos"],
)
def test_columns(row: NbRow, expected: dict[str, Any]) -> None:
    assert row.columns() == expected


def test_columns_do_not_share_mutable_defaults() -> None:
    a = LogicalSwitchPort(owner=POD, name="a", switch="s")
    a.columns()["options"]["x"] = "1"
    a.options["y"] = "2"  # type: ignore[index]  # the default dict is per instance
    assert LogicalSwitchPort(owner=POD, name="b", switch="s").columns()["options"] == {}


def test_owner_keys_win_over_extra_ids() -> None:
    row = AddressSet(owner=POD, name="as",
                     extra_ids={"kovn.io/owner": "spoofed", names.POD_UID_KEY: "u"})
    assert row.external_ids() == {**POD_IDS, names.POD_UID_KEY: "u"}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (SAMPLES[LogicalSwitch], {"load_balancer": ("Load_Balancer",
                                                    frozenset({"Service_default/web_TCP"})),
                                  "load_balancer_group": ("Load_Balancer_Group",
                                                          frozenset({"clusterLBGroup"}))}),
        (SAMPLES[PortGroup], {"ports": ("Logical_Switch_Port",
                                        frozenset({"default_web-1", "default_web-2"}))}),
        # member side: the group's row has no field for its load balancers
        (SAMPLES[LoadBalancerGroup], {}),
        (SAMPLES[LogicalRouter], {"load_balancer_group": ("Load_Balancer_Group",
                                                          frozenset({"clusterLBGroup"}))}),
        (SAMPLES[LoadBalancer], {}),
        (SAMPLES[AddressSet], {}),
        (SAMPLES[LogicalSwitchPort], {}),
    ],
    ids=["switch", "port-group", "lb-group", "router", "lb", "address-set", "lsp"],
)
def test_references(row: NbRow, expected: dict[str, Any]) -> None:
    assert row.references() == expected


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (SAMPLES[LogicalSwitch], None),
        (SAMPLES[LogicalRouter], None),
        (SAMPLES[LoadBalancer], None),
        (SAMPLES[LoadBalancerGroup], None),
        (SAMPLES[PortGroup], None),
        (SAMPLES[AddressSet], None),
        (SAMPLES[LogicalSwitchPort], ParentRef("Logical_Switch", "ovn-default", "ports")),
        (SAMPLES[LogicalRouterPort], ParentRef("Logical_Router", "ovn-cluster", "ports")),
        (SAMPLES[StaticRoute], ParentRef("Logical_Router", "ovn-cluster", "static_routes")),
        (SAMPLES[NAT], ParentRef("Logical_Router", "ovn-cluster", "nat")),
        (SAMPLES[ACL], ParentRef("Port_Group", "kovn_np_default_allow_web", "acls")),
        (SAMPLES[SwitchACL], ParentRef("Logical_Switch", "ovn-default", "acls")),
        (SAMPLES[QoS], ParentRef("Logical_Switch", "ovn-default", "qos_rules")),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, NbRow) else None,
)
def test_parent(row: NbRow, expected: ParentRef | None) -> None:
    assert row.parent() == expected


# --- keys ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("row", "key"),
    [
        (SAMPLES[LogicalSwitch], "ovn-default"),
        (SAMPLES[LogicalSwitchPort], "default_web-1"),
        (SAMPLES[LoadBalancer], "Service_default/web_TCP"),
        (SAMPLES[LoadBalancerGroup], "clusterLBGroup"),
        (SAMPLES[ACL],
         "pg:kovn_np_default_allow_web|to-lport|1001|outport == @kovn_np_default_allow_web && ip4"),
        (SAMPLES[SwitchACL], "ls:ovn-default|from-lport|1000|ip4.dst == 10.17.0.0/16"),
        (SAMPLES[QoS], 'ovn-default|from-lport|2000|inport == "default_web-1"'),
        (SAMPLES[NAT], "ovn-cluster|snat|10.16.0.0/16|192.0.2.10"),
        (SAMPLES[StaticRoute], "ovn-cluster|t1|10.16.0.0/24|100.64.0.2"),
        (SAMPLES[RouterPolicy],
         'ovn-cluster|1000|ip4.src == 10.16.0.0/16 && is_chassis_resident("rtoj-GR_node1")'),
        # an explicit row_key wins over the derived one
        (ACL(owner=NP, port_group="pg", direction="to-lport", priority=1, match="ip4",
             action="drop", row_key="np:default/x:ingress:0"), "np:default/x:ingress:0"),
        (NAT(owner=NODE, router="r", type="snat", external_ip="e", logical_ip="l",
             row_key="my-nat"), "my-nat"),
        (QoS(owner=POD, switch="s", direction="to-lport", priority=1, match="m",
             row_key="qos-1"), "qos-1"),
        (StaticRoute(owner=NODE, router="r", ip_prefix="p", nexthop="n", row_key="rt"), "rt"),
    ],
    ids=["ls", "lsp", "lb", "lbg", "acl", "switch-acl", "qos", "nat", "route", "policy",
         "acl-explicit",
         "nat-explicit", "qos-explicit", "route-explicit"],
)
def test_key(row: NbRow, key: str) -> None:
    assert row.key == key
    assert row.ident == (row.TABLE, key)
    ids = row.external_ids()
    if row.NAMED:
        assert names.ROW_KEY not in ids
    else:  # unnamed tables carry their identity in external_ids:kovn.io/key
        assert ids[names.ROW_KEY] == key
        assert row.columns()["external_ids"][names.ROW_KEY] == key


@pytest.mark.parametrize(
    ("row_type", "named"),
    [(t, t.KEY_FIELDS == ("name",)) for t in rows.ROW_TYPES],
    ids=[t.__name__ for t in rows.ROW_TYPES],
)
def test_named_tables(row_type: type[NbRow], named: bool) -> None:
    unnamed = {ACL, SwitchACL, QoS, NAT, StaticRoute, RouterPolicy, DNS, ChassisTemplateVar,
               rows.MeterBand}
    assert named is (row_type not in unnamed)
    assert SAMPLES[row_type].NAMED is named


def test_switch_and_port_group_acls_never_share_a_key() -> None:
    common = dict(owner=NP, direction="to-lport", priority=1000, match="ip4", action="drop")
    assert ACL(port_group="x", **common).key != SwitchACL(switch="x", **common).key


@pytest.mark.parametrize(
    ("changed", "same_key"),
    [
        ({"priority": 1002}, False),
        ({"match": "ip6"}, False),
        ({"direction": "from-lport"}, False),
        ({"port_group": "other"}, False),
        ({"action": "drop"}, True),
        ({"log": True}, True),
        ({"options": {"x": "y"}}, True),
        ({"owner": SUBNET}, True),
    ],
)
def test_acl_key_fields(changed: dict[str, Any], same_key: bool) -> None:
    base = dict(owner=NP, port_group="pg", direction="to-lport", priority=1001, match="ip4",
                action="allow-related")
    assert (ACL(**base).key == ACL(**{**base, **changed}).key) is same_key


# --- ACL validation ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ACL, SwitchACL])
@pytest.mark.parametrize(
    ("changed", "message"),
    [
        ({"priority": -1}, "priority -1"),
        ({"priority": 32768}, "priority 32768"),
        ({"priority": 100000}, "priority 100000"),
        ({"direction": "ingress"}, "direction 'ingress'"),
        ({"direction": ""}, "direction ''"),
        ({"action": "accept"}, "action 'accept'"),
        ({"action": "ALLOW"}, "action 'ALLOW'"),
        ({"action": ""}, "action ''"),
    ],
)
def test_acl_validation(cls: type[NbRow], changed: dict[str, Any], message: str) -> None:
    parent = {"port_group": "pg"} if cls is ACL else {"switch": "ls"}
    base = dict(owner=NP, direction="to-lport", priority=1000, match="ip4", action="allow")
    with pytest.raises(ValueError, match=message):
        cls(**parent, **{**base, **changed})


@pytest.mark.parametrize("priority", [0, 32767])
@pytest.mark.parametrize("direction", ["from-lport", "to-lport"])
@pytest.mark.parametrize(
    "action", ["allow", "allow-related", "allow-stateless", "drop", "reject", "pass"]
)
def test_acl_valid_edges(priority: int, direction: str, action: str) -> None:
    acl = ACL(owner=NP, port_group="pg", direction=direction, priority=priority, match="1",
              action=action)
    assert acl.columns()["priority"] == priority


# --- from_db round trip --------------------------------------------------------------------------
def _db_view(row: NbRow) -> tuple[dict[str, Any], str | None, dict[str, frozenset[str]],
                                  frozenset[Membership]]:
    """What observe() hands to from_db: IDL-form columns, the parent's name, reference names,
    the containers holding the row."""
    parent = row.parent()
    refs = {col: names_ for col, (_table, names_) in row.references().items()}
    return row.columns(), parent.name if parent else None, refs, frozenset(row.member_of)


@pytest.mark.parametrize("row", list(SAMPLES.values()), ids=[t.__name__ for t in SAMPLES])
def test_from_db_round_trip(row: NbRow) -> None:
    back = type(row).from_db(*_db_view(row))
    assert type(back) is type(row)
    assert back.columns() == row.columns()
    assert back.references() == row.references()
    assert back.parent() == row.parent()
    assert back.member_of == row.member_of
    assert back.ident == row.ident
    assert back.owner == row.owner
    assert dict(back.extra_ids) == dict(row.extra_ids)
    # A second trip is a fixed point.
    assert type(row).from_db(*_db_view(back)) == back


@pytest.mark.parametrize("row_type", rows.ROW_TYPES, ids=[t.__name__ for t in rows.ROW_TYPES])
def test_from_db_round_trip_of_minimal_rows(row_type: type[NbRow]) -> None:
    """Rows with every defaultable column left at its default also survive the trip."""
    sample = SAMPLES[row_type]
    required = {
        f: getattr(sample, f)
        for f, spec in row_type.__dataclass_fields__.items()
        if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
    }
    row = row_type(**required)
    back = row_type.from_db(*_db_view(row))
    assert back.columns() == row.columns()
    assert back.references() == row.references()
    assert back.parent() == row.parent()


def test_from_db_keeps_extra_ids_but_not_kovn_keys() -> None:
    ids = {**POD_IDS, names.ROW_KEY: "k", names.POD_UID_KEY: "uid-1", "note": "x"}
    qos = QoS.from_db(
        {"direction": "to-lport", "priority": 1, "match": "m", "bandwidth": {}, "action": {},
         "external_ids": ids},
        "ls", {},
    )
    assert qos.owner == POD
    assert qos.key == "k"
    assert dict(qos.extra_ids) == {names.POD_UID_KEY: "uid-1", "note": "x"}
    assert qos.external_ids() == ids


@pytest.mark.parametrize(
    ("name", "owner"),
    [(names.CLUSTER_LB_GROUP, rows.CLUSTER),
     (names.node_lb_group("node1"), NODE)],
    ids=["cluster", "node"],
)
def test_from_db_of_lb_group_reads_the_owner_from_the_name(name: str, owner: Owner) -> None:
    group = LoadBalancerGroup.from_db({"name": name}, None, {})
    assert group.owner == owner
    assert group == LoadBalancerGroup(owner=owner, name=name)


@pytest.mark.parametrize(
    ("owner", "name", "message"),
    [(NODE, names.CLUSTER_LB_GROUP, "says owner Cluster cluster"),
     (rows.CLUSTER, names.node_lb_group("node1"), "says owner Node node1"),
     (NODE, names.node_lb_group("node2"), "says owner Node node2"),
     (rows.CLUSTER, "hand-group", "not a kovn name")],
    ids=["cluster-name-node-owner", "node-name-cluster-owner", "other-node", "foreign-name"],
)
def test_lb_group_owner_must_match_its_name(owner: Owner, name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoadBalancerGroup(owner=owner, name=name)


# --- memberships ---------------------------------------------------------------------------------
def test_membership_builders_know_the_column() -> None:
    assert LoadBalancerGroup.membership("g") == Membership("Load_Balancer_Group", "g",
                                                           "load_balancer")
    assert LogicalRouter.membership("GR_n1") == Membership("Logical_Router", "GR_n1",
                                                           "load_balancer")
    assert LogicalRouter.membership("GR_n1", "load_balancer").member_table == "Load_Balancer"
    # One member-side column (dns_records; its load_balancer is container side).
    assert LogicalSwitch.membership("s1") == Membership("Logical_Switch", "s1", "dns_records")
    with pytest.raises(ValueError, match="Port_Group has member-side columns"):
        PortGroup.membership("pg")  # none: its ports are container side


@pytest.mark.parametrize(
    ("table", "column", "message"),
    [("Logical_Switch", "load_balancer", "not a member-side column"),
     ("Logical_Switch", "load_balancer_group", "not a member-side column"),
     ("Port_Group", "ports", "not a member-side column"),
     ("Logical_Switch", "ports", "not a member-side column"),
     ("Load_Balancer_Group", "nope", "not a member-side column")],
)
def test_membership_only_in_member_side_columns(table: str, column: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Membership(table, "x", column)


def test_membership_must_hold_the_rows_table() -> None:
    in_group = LoadBalancerGroup.membership(names.CLUSTER_LB_GROUP)
    with pytest.raises(ValueError, match="holds Load_Balancer rows"):
        AddressSet(owner=NP, name="as", member_of={in_group})
    with pytest.raises(ValueError, match="names no container"):
        LoadBalancerGroup.membership("")


def test_member_of_is_a_frozenset_whatever_was_passed() -> None:
    a = LoadBalancerGroup.membership("clusterLBGroup")
    b = LogicalRouter.membership("GR_n1")
    lbs = [LoadBalancer(owner=SVC, name="lb", member_of=given)
           for given in ({a, b}, [b, a], (a, b, a), frozenset({a, b}))]
    assert all(type(lb.member_of) is frozenset for lb in lbs)
    assert all(lb == lbs[0] for lb in lbs)
    # memberships are not columns, references or parents
    assert "member_of" not in lbs[0].columns() and lbs[0].references() == {}


@pytest.mark.parametrize(
    ("changed", "message"),
    [({"priority": 32768}, "priority 32768"), ({"action": "forward"}, "action 'forward'")],
)
def test_router_policy_validation(changed: dict[str, Any], message: str) -> None:
    base = dict(owner=NODE, router="ovn-cluster", priority=1000, match="ip4",
                action="reroute", nexthops=("100.64.0.2",))
    with pytest.raises(ValueError, match=message):
        RouterPolicy(**{**base, **changed})
