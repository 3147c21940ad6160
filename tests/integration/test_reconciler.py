"""Reconciler against a real ovsdb-server with the OVN NB schema; NB is checked with ovn-nbctl.

The topology below is a small cluster: router, pod switch and join switch linked to it, two
pods, a node management port, a Service load balancer in the cluster LB group, a
NetworkPolicy (port group, ACL, address set), a route, a SNAT, a pod QoS rule and a subnet
isolation ACL. Rows made by hand with ovn-nbctl play the part of an operator's own config.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Iterable
from typing import Any

import pytest

from northbound import names
from northbound.apply import ConflictError
from northbound.connection import NbConnection, NorthboundError
from northbound.reconciler import Reconciler
from northbound.rows import (
    ACL,
    CLUSTER,
    MEMBER_SIDE,
    NAT,
    AddressSet,
    LoadBalancer,
    LoadBalancerGroup,
    LogicalRouter,
    LogicalRouterPort,
    LogicalSwitch,
    LogicalSwitchPort,
    Membership,
    NbRow,
    Owner,
    PortGroup,
    QoS,
    StaticRoute,
    SwitchACL,
)
from tests.integration.conftest import NB_SCHEMA, NbServer

ROUTER = names.CLUSTER_ROUTER
SWITCH = names.DEFAULT_SUBNET
JOIN = names.JOIN_SWITCH
LBG = names.CLUSTER_LB_GROUP
IN_LBG = LoadBalancerGroup.membership(LBG)
PORT_A = names.pod_port("default", "web-1")
PORT_B = names.pod_port("default", "web-2")
NODE_PORT = names.node_port("node1")
LB_NAME = names.load_balancer("default", "web", "tcp")
PG_NAME = names.policy_port_group("default", "allow-web")
AS_NAME = names.peer_address_set("default", "allow-web")

SUBNET = Owner(names.OwnerType.SUBNET, SWITCH)
JOIN_OWNER = Owner(names.OwnerType.SUBNET, JOIN)
POD_A = Owner(names.OwnerType.POD, "default/web-1")
POD_B = Owner(names.OwnerType.POD, "default/web-2")
NODE = Owner(names.OwnerType.NODE, "node1")
SVC = Owner(names.OwnerType.SERVICE, "default/web")
NP = Owner(names.OwnerType.NETWORK_POLICY, "default/allow-web")

MAC_A, IP_A = "0a:58:0a:10:00:05", "10.16.0.5"
MAC_B, IP_B = "0a:58:0a:10:00:06", "10.16.0.6"
ACL_MATCH = f"outport == @{PG_NAME} && ip4.src == ${AS_NAME}"


def pod_port(owner: Owner, name: str, mac: str, ip: str, uid: str, **kw: Any) -> NbRow:
    kw.setdefault("options", {"requested-chassis": "node1", "iface-id-ver": uid})
    return LogicalSwitchPort(
        owner=owner, name=name, switch=kw.pop("switch", SWITCH), addresses=(f"{mac} {ip}",),
        port_security=(f"{mac} {ip}",), extra_ids={names.POD_UID_KEY: uid}, **kw,
    )


def cluster_rows() -> list[NbRow]:
    def link(switch: str, owner: Owner, mac: str, cidr: str) -> list[NbRow]:
        rport = names.router_port(ROUTER, switch)
        return [
            LogicalRouterPort(owner=owner, name=rport, router=ROUTER, mac=mac, networks=(cidr,)),
            LogicalSwitchPort(owner=owner, name=names.switch_router_port(switch, ROUTER),
                              switch=switch, type="router", addresses=("router",),
                              options={"router-port": rport}),
        ]

    return [
        LogicalRouter(owner=CLUSTER, name=ROUTER),
        LogicalSwitch(owner=SUBNET, name=SWITCH,
                      other_config={"subnet": "10.16.0.0/16", "exclude_ips": "10.16.0.1"},
                      load_balancer_groups=frozenset({LBG})),
        LogicalSwitch(owner=JOIN_OWNER, name=JOIN, other_config={"subnet": "100.64.0.0/16"}),
        *link(SWITCH, SUBNET, "0a:58:0a:10:00:01", "10.16.0.1/16"),
        *link(JOIN, JOIN_OWNER, "0a:58:64:40:00:01", "100.64.0.1/16"),
        LoadBalancerGroup(name=LBG),
        NAT(owner=SUBNET, router=ROUTER, type="snat", external_ip="192.0.2.10",
            logical_ip="10.16.0.0/16"),
        SwitchACL(owner=SUBNET, switch=SWITCH, direction="to-lport", priority=1000,
                  match="ip4.src == 10.17.0.0/16", action="drop"),
    ]


def pod_a_rows(**kw: Any) -> list[NbRow]:
    return [
        pod_port(POD_A, PORT_A, MAC_A, IP_A, "uid-a", **kw),
        QoS(owner=POD_A, switch=SWITCH, direction="from-lport", priority=2000,
            match=f'inport == "{PORT_A}"', bandwidth={"rate": 10000, "burst": 1000}),
    ]


def pod_b_rows(**kw: Any) -> list[NbRow]:
    return [pod_port(POD_B, PORT_B, MAC_B, IP_B, "uid-b", **kw)]


def node_rows() -> list[NbRow]:
    return [
        LogicalSwitchPort(owner=NODE, name=NODE_PORT, switch=JOIN,
                          addresses=("0a:58:64:40:00:02 100.64.0.2",)),
        StaticRoute(owner=NODE, router=ROUTER, ip_prefix="100.64.0.2/32", nexthop="100.64.0.2",
                    output_port=names.router_port(ROUTER, JOIN)),
    ]


def service_rows() -> list[NbRow]:
    # The Service's load balancer joins the Cluster's group from its own side.
    return [LoadBalancer(owner=SVC, name=LB_NAME, member_of={IN_LBG},
                         vips={"10.96.0.10:80": f"{IP_A}:8080,{IP_B}:8080"})]


def policy_rows(ports: Iterable[str] = (PORT_A, PORT_B)) -> list[NbRow]:
    return [
        PortGroup(owner=NP, name=PG_NAME, ports=frozenset(ports)),
        ACL(owner=NP, port_group=PG_NAME, direction="to-lport", priority=1001, match=ACL_MATCH,
            action="allow-related"),
        AddressSet(owner=NP, name=AS_NAME, addresses=(IP_B, "10.16.0.7")),
    ]


def topology() -> list[NbRow]:
    return [*cluster_rows(), *pod_a_rows(), *pod_b_rows(), *node_rows(), *service_rows(),
            *policy_rows()]


ACL_KEY = policy_rows()[1].key
SWITCH_ACL_KEY = cluster_rows()[-1].key
QOS_KEY = pod_a_rows()[1].key


def replace(rows: list[NbRow], name_or_key: str, **changes: Any) -> list[NbRow]:
    """`rows` with the one row of that name (or key) changed."""
    hits = [r for r in rows if r.key == name_or_key]
    assert len(hits) == 1, name_or_key
    return [dataclasses.replace(r, **changes) if r is hits[0] else r for r in rows]


def only(rows: Iterable[NbRow], table: str) -> NbRow:
    """The one row of `table` in `rows`."""
    hits = [r for r in rows if table == r.TABLE]
    assert len(hits) == 1, table
    return hits[0]


def row(rows: Iterable[NbRow], key: str) -> NbRow:
    hits = [r for r in rows if r.key == key]
    assert len(hits) == 1, key
    return hits[0]


def without(rows: list[NbRow], *keys: str) -> list[NbRow]:
    assert set(keys) <= {r.key for r in rows}
    return [r for r in rows if r.key not in keys]


# --- reading NB back through ovn-nbctl -----------------------------------------------------------
_SCHEMA = json.loads(NB_SCHEMA.read_text())["tables"]


def _atom(value: Any) -> Any:
    if isinstance(value, list) and len(value) == 2 and value[0] in ("uuid", "named-uuid"):
        return value[1]
    return value


def _decode(value: Any, coltype: Any) -> Any:
    """ovn-nbctl --format=json value -> the python IDL form rows.columns() uses."""
    if isinstance(coltype, str) or ("min" not in coltype and "max" not in coltype
                                    and "value" not in coltype):
        return _atom(value)
    if "value" in coltype:
        return {_atom(k): _atom(v) for k, v in value[1]}
    items = value[1] if isinstance(value, list) and value and value[0] == "set" else [value]
    items = [_atom(i) for i in items]
    if coltype.get("min", 1) == 1 and coltype.get("max", 1) == 1:
        return items[0]
    if coltype.get("max", 1) == 1:
        return items
    return sorted(items)


class Snapshot:
    """All of NB as ovn-nbctl lists it, decoded, with uuids left as strings."""

    def __init__(self, server: NbServer) -> None:
        self.tables: dict[str, list[dict[str, Any]]] = {}
        for table, spec in _SCHEMA.items():
            if table == "NB_Global":  # ovn-nbctl makes it on first use; kovn never writes it
                continue
            raw = json.loads(server.nbctl("--format=json", "list", table))
            cols = spec["columns"]
            self.tables[table] = [
                {h: (_atom(v) if h == "_uuid" else _decode(v, cols[h]["type"]))
                 for h, v in zip(raw["headings"], rec, strict=True)}
                for rec in raw["data"]
            ]
        self.by_uuid = {r["_uuid"]: (t, r) for t, rs in self.tables.items() for r in rs}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Snapshot) and self._canonical() == other._canonical()

    def _canonical(self) -> dict[str, list[str]]:
        return {t: sorted(json.dumps(r, sort_keys=True) for r in rs)
                for t, rs in self.tables.items()}

    def named(self, table: str, name: str) -> dict[str, Any]:
        hits = [r for r in self.tables[table] if r.get("name") == name]
        assert len(hits) == 1, f"{len(hits)} {table} rows named {name!r}"
        return hits[0]

    def has(self, table: str, name: str) -> bool:
        return any(r.get("name") == name for r in self.tables[table])

    def owned(self, table: str) -> list[dict[str, Any]]:
        if table == "Load_Balancer_Group":
            return [r for r in self.tables[table] if names.lb_group_owner(r["name"])]
        return [r for r in self.tables[table] if names.is_owned(r["external_ids"])]

    def find(self, row: NbRow) -> dict[str, Any]:
        if row.NAMED:
            return self.named(row.TABLE, row.key)
        hits = [r for r in self.owned(row.TABLE) if r["external_ids"][names.ROW_KEY] == row.key]
        assert len(hits) == 1, f"{len(hits)} {row.TABLE} rows with key {row.key!r}"
        return hits[0]

    def names_of(self, uuids: Iterable[str]) -> set[str]:
        return {self.by_uuid[u][1]["name"] for u in uuids}

    def owned_names_of(self, uuids: Iterable[str]) -> set[str]:
        owned = {r["_uuid"] for t in self.tables for r in self.owned(t)}
        return self.names_of(u for u in uuids if u in owned)

    def holders(self, table: str, column: str, uuid: str) -> list[str]:
        return [r["name"] for r in self.tables[table] if uuid in r[column]]

    def memberships(self, uuid: str) -> set[Membership]:
        """Every member-side container column that holds the row `uuid`."""
        return {Membership(table, r["name"], column) for table, column in MEMBER_SIDE
                for r in self.tables[table] if uuid in r[column]}

    def dangling(self) -> list[str]:
        """References to rows that do not exist (OVSDB should never hold one)."""
        found = []
        for table, rs in self.tables.items():
            for column, spec in _SCHEMA[table]["columns"].items():
                kinds = [spec["type"].get(k) for k in ("key", "value")
                         if isinstance(spec["type"], dict)]
                if not any(isinstance(k, dict) and "refTable" in k for k in kinds):
                    continue
                for r in rs:
                    value = r[column]
                    uuids = value if isinstance(value, list) else (
                        [*value, *value.values()] if isinstance(value, dict) else [value])
                    found += [f"{table}.{column} -> {u}" for u in uuids
                              if isinstance(u, str) and u not in self.by_uuid]
        return found

    def ident(self, table: str, row: dict[str, Any]) -> str:
        return row.get("external_ids", {}).get(names.ROW_KEY) or row["name"]


def assert_nb_holds_exactly(server: NbServer, desired: list[NbRow]) -> Snapshot:
    """kovn's rows in NB are exactly `desired`: same set of rows, every column, reference and
    container as the row says (reference columns may also hold rows that are not kovn's)."""
    snap = Snapshot(server)
    assert not snap.dangling()
    want = {(r.TABLE, r.key) for r in desired}
    have = {(t, snap.ident(t, r)) for t in {r.TABLE for r in desired} | set(_KOVN_TABLES)
            for r in snap.owned(t)}
    assert have == want
    for row in desired:
        nb_row = snap.find(row)
        for column, value in row.columns().items():
            assert nb_row[column] == value, f"{row.TABLE} {row.key!r} column {column}"
        for column, (_table, ref_names) in row.references().items():
            assert snap.owned_names_of(nb_row[column]) == ref_names, (
                f"{row.TABLE} {row.key!r} references in {column}")
        parent = row.parent()
        if parent is not None:
            assert snap.holders(parent.table, parent.column, nb_row["_uuid"]) == [parent.name], (
                f"{row.TABLE} {row.key!r} container")
        assert snap.memberships(nb_row["_uuid"]) == row.member_of, (
            f"{row.TABLE} {row.key!r} memberships")
    return snap


_KOVN_TABLES = ("Logical_Switch", "Logical_Switch_Port", "Logical_Router", "Logical_Router_Port",
                "Logical_Router_Static_Route", "NAT", "Load_Balancer", "Load_Balancer_Group",
                "Port_Group", "Address_Set", "ACL", "QoS")

_sync_ids = itertools.count()


def settle(nb: NbConnection, server: NbServer, timeout: float = 10.0) -> None:
    """Wait until kovn's IDL replica has seen every change ovn-nbctl committed so far.

    ovsdb-server sends one client its monitor updates in commit order, so once a marker row
    committed after those changes is in the replica, they are too.
    """
    marker = f"kovn_test_sync_{next(_sync_ids)}"
    uuid = server.nbctl("create", "Address_Set", f"name={marker}")
    deadline = time.monotonic() + timeout
    while not nb.api.db_find_rows("Address_Set", ("name", "=", marker)).execute(
        check_error=True
    ):
        assert time.monotonic() < deadline, "IDL replica did not catch up with ovn-nbctl"
        time.sleep(0.02)
    server.nbctl("destroy", "Address_Set", uuid)


def nbctl_get(server: NbServer, table: str, record: str, column: str) -> str:
    return server.nbctl("get", table, record, column)


def uuid_of(server: NbServer, table: str, name: str) -> str:
    return server.nbctl("--bare", "--columns=_uuid", "find", table, f"name={name}")


# --- create a full topology ----------------------------------------------------------------------
def test_creates_full_topology(nb_server: NbServer, reconciler: Reconciler) -> None:
    desired = topology()
    result = reconciler.reconcile(desired)
    assert len(result.creates) == len(desired) == 19
    assert not result.updates and not result.deletes

    snap = assert_nb_holds_exactly(nb_server, desired)
    get = lambda *a: nbctl_get(nb_server, *a)  # noqa: E731

    # Pod ports, column by column, as ovn-nbctl prints them.
    assert get("Logical_Switch_Port", PORT_A, "addresses") == f'["{MAC_A} {IP_A}"]'
    assert get("Logical_Switch_Port", PORT_A, "port_security") == f'["{MAC_A} {IP_A}"]'
    assert get("Logical_Switch_Port", PORT_A, "options") == (
        '{iface-id-ver=uid-a, requested-chassis=node1}')
    assert get("Logical_Switch_Port", PORT_A, "external_ids") == (
        '{"kovn.io/owner"="default/web-1", "kovn.io/owner-type"=Pod, "kovn.io/pod-uid"=uid-a}')
    assert get("Logical_Switch_Port", PORT_A, "type") == '""'
    assert get("Logical_Switch_Port", PORT_A, "enabled") == "[]"
    assert nb_server.nbctl("lsp-get-ls", PORT_B).endswith(f"({SWITCH})")
    assert nb_server.nbctl("lsp-get-ls", NODE_PORT).endswith(f"({JOIN})")
    assert sorted(nb_server.nbctl("--bare", "--columns=name", "find", "Logical_Switch_Port",
                                  "external_ids:kovn.io/owner-type=Pod").split()) == [PORT_A,
                                                                                      PORT_B]

    # Router <-> switch links.
    assert sorted(nb_server.nbctl("lrp-list", ROUTER).split()[1::2]) == [
        "(ovn-cluster-join)", "(ovn-cluster-ovn-default)"]
    assert get("Logical_Router_Port", "ovn-cluster-ovn-default", "networks") == '["10.16.0.1/16"]'
    assert get("Logical_Router_Port", "ovn-cluster-ovn-default", "mac") == '"0a:58:0a:10:00:01"'
    assert get("Logical_Switch_Port", "ovn-default-ovn-cluster", "type") == "router"
    assert get("Logical_Switch_Port", "ovn-default-ovn-cluster", "options") == (
        "{router-port=ovn-cluster-ovn-default}")
    assert get("Logical_Switch_Port", "join-ovn-cluster", "addresses") == "[router]"
    assert get("Logical_Switch", SWITCH, "other_config") == (
        '{exclude_ips="10.16.0.1", subnet="10.16.0.0/16"}')

    # Service load balancer, in the cluster LB group that the pod switch uses.
    assert get("Load_Balancer", LB_NAME, "vips") == (
        '{"10.96.0.10:80"="10.16.0.5:8080,10.16.0.6:8080"}')
    assert get("Load_Balancer", LB_NAME, "protocol") == "tcp"
    assert snap.names_of(snap.named("Load_Balancer_Group", LBG)["load_balancer"]) == {LB_NAME}
    assert snap.names_of(snap.named("Logical_Switch", SWITCH)["load_balancer_group"]) == {LBG}
    assert snap.named("Logical_Switch", JOIN)["load_balancer_group"] == []

    # NetworkPolicy: port group with both pods and its ACL; the peer address set.
    assert snap.names_of(snap.named("Port_Group", PG_NAME)["ports"]) == {PORT_A, PORT_B}
    acls = nb_server.nbctl("--type=port-group", "acl-list", PG_NAME)
    assert acls == f"to-lport  1001 ({ACL_MATCH}) allow-related"
    assert get("Address_Set", AS_NAME, "addresses") == '["10.16.0.6", "10.16.0.7"]'

    # Route, SNAT, QoS and the subnet ACL.
    routes = nb_server.nbctl("lr-route-list", ROUTER)
    assert "100.64.0.2" in routes and "ovn-cluster-join" in routes
    nat = nb_server.nbctl("lr-nat-list", ROUTER).splitlines()
    assert len(nat) == 2 and nat[1].split() == ["snat", "192.0.2.10", "10.16.0.0/16"]
    qos = nb_server.nbctl("qos-list", SWITCH)
    assert f'(inport == "{PORT_A}")' in qos and "rate=10000 burst=1000" in qos
    assert nb_server.nbctl("--type=switch", "acl-list", SWITCH) == (
        "to-lport  1000 (ip4.src == 10.17.0.0/16) drop")
    qos_ids = json.loads(nb_server.nbctl("--format=json", "--columns=external_ids", "find", "QoS",
                                         "direction=from-lport"))["data"]
    assert dict(qos_ids[0][0][1])[names.ROW_KEY] == f'{SWITCH}|from-lport|2000|inport == "{PORT_A}"'


def test_second_reconcile_is_empty(nb_server: NbServer, reconciler: Reconciler) -> None:
    desired = topology()
    assert reconciler.reconcile(desired)
    before = Snapshot(nb_server)
    for _ in range(2):
        again = reconciler.reconcile(desired)
        assert not again, again
        assert not reconciler.plan(desired)
    assert Snapshot(nb_server) == before


def test_reconcile_in_any_order(nb_server: NbServer, reconciler: Reconciler) -> None:
    """Creates may name containers and referenced rows that come later in `desired`."""
    desired = list(reversed(topology()))
    reconciler.reconcile(desired)
    assert_nb_holds_exactly(nb_server, desired)
    assert not reconciler.reconcile(topology())


# --- updates -------------------------------------------------------------------------------------
def test_updates(nb_server: NbServer, reconciler: Reconciler) -> None:
    start = replace(topology(), PORT_A, options={"a": "1", "b": "2"})
    reconciler.reconcile(start)
    assert nbctl_get(nb_server, "Logical_Switch_Port", PORT_A, "options") == '{a="1", b="2"}'
    acl_uuid = Snapshot(nb_server).find(row(start, ACL_KEY))["_uuid"]
    port_b_uuid = uuid_of(nb_server, "Logical_Switch_Port", PORT_B)
    nat_key = only(start, "NAT").key
    route_key = only(start, "Logical_Router_Static_Route").key

    desired = replace(start, PORT_A, options={"a": "1"},  # a map key removed
                      addresses=(f"{MAC_A} 10.16.0.50",), port_security=(), enabled=False)
    desired = replace(desired, PORT_B, switch="other")  # moves to another switch
    desired = replace(desired, SWITCH, other_config={"subnet": "10.16.0.0/16"},
                      load_balancer_groups=frozenset())
    desired = replace(desired, LB_NAME, options={"reject": "true"}, member_of=frozenset(),
                      vips={"10.96.0.10:80": f"{IP_B}:8080", "10.96.0.10:443": f"{IP_B}:8443"})
    desired = replace(desired, PG_NAME, ports=frozenset({PORT_A}))
    desired = replace(desired, ACL_KEY, action="drop")  # not part of the key: changed in place
    desired = replace(desired, AS_NAME, addresses=("10.16.0.8",))
    desired = replace(desired, QOS_KEY, bandwidth={"rate": 5000})
    desired = replace(desired, nat_key, external_ip="192.0.2.11")  # part of the key: replaced
    desired = replace(desired, route_key, nexthop="100.64.0.3")
    desired = [*desired, LogicalSwitch(owner=Owner(names.OwnerType.SUBNET, "other"), name="other")]

    result = reconciler.reconcile(desired)
    assert sorted(c.row.TABLE for c in result.creates) == [
        "Logical_Router_Static_Route", "Logical_Switch", "NAT"]
    assert sorted(d.row.key for d in result.deletes) == sorted([nat_key, route_key])
    assert sorted(u.row.key for u in result.updates) == sorted(
        [PORT_A, PORT_B, SWITCH, LB_NAME, PG_NAME, ACL_KEY, AS_NAME, QOS_KEY])

    snap = assert_nb_holds_exactly(nb_server, desired)
    get = lambda *a: nbctl_get(nb_server, *a)  # noqa: E731
    assert get("Logical_Switch_Port", PORT_A, "options") == '{a="1"}'
    assert nb_server.nbctl("--if-exists", "get", "Logical_Switch_Port", PORT_A, "options:b") == ""
    assert get("Logical_Switch_Port", PORT_A, "addresses") == f'["{MAC_A} 10.16.0.50"]'
    assert get("Logical_Switch_Port", PORT_A, "port_security") == "[]"
    assert get("Logical_Switch_Port", PORT_A, "enabled") == "false"
    assert get("Logical_Switch", SWITCH, "other_config") == '{subnet="10.16.0.0/16"}'
    assert get("Logical_Switch", SWITCH, "load_balancer_group") == "[]"
    assert get("Load_Balancer", LB_NAME, "vips") == (
        '{"10.96.0.10:443"="10.16.0.6:8443", "10.96.0.10:80"="10.16.0.6:8080"}')
    assert get("Load_Balancer", LB_NAME, "options") == '{reject="true"}'
    assert get("Load_Balancer_Group", LBG, "load_balancer") == "[]"
    assert snap.names_of(snap.named("Port_Group", PG_NAME)["ports"]) == {PORT_A}
    assert get("Address_Set", AS_NAME, "addresses") == '["10.16.0.8"]'
    assert "rate=5000" in nb_server.nbctl("qos-list", SWITCH)
    nat = nb_server.nbctl("lr-nat-list", ROUTER)
    assert "192.0.2.11" in nat and "192.0.2.10" not in nat
    assert [r["nexthop"] for r in snap.tables["Logical_Router_Static_Route"]] == ["100.64.0.3"]
    assert "drop" in nb_server.nbctl("--type=port-group", "acl-list", PG_NAME)
    # The ACL changed in place; the port moved: the same row, now on the other switch only.
    assert snap.find(row(desired, ACL_KEY))["_uuid"] == acl_uuid
    assert uuid_of(nb_server, "Logical_Switch_Port", PORT_B) == port_b_uuid
    assert nb_server.nbctl("lsp-get-ls", PORT_B).endswith("(other)")
    assert PORT_B not in nb_server.nbctl("lsp-list", SWITCH)

    assert not reconciler.reconcile(desired)


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ({"a": "1", "b": "2"}, {"a": "1"}, '{a="1"}'),
        ({"a": "1", "b": "2"}, {}, "{}"),
        ({}, {"a": "1"}, '{a="1"}'),
        ({"a": "1"}, {"a": "2", "c": "3"}, '{a="2", c="3"}'),
    ],
)
def test_map_column_is_replaced_not_merged(nb_server: NbServer, reconciler: Reconciler,
                                           before: dict[str, str], after: dict[str, str],
                                           expected: str) -> None:
    base = [*cluster_rows(), *service_rows()]
    reconciler.reconcile([*base, *pod_a_rows(options=before)])
    reconciler.reconcile([*base, *pod_a_rows(options=after)])
    assert nbctl_get(nb_server, "Logical_Switch_Port", PORT_A, "options") == expected
    assert not reconciler.reconcile([*base, *pod_a_rows(options=after)])


# --- deletes -------------------------------------------------------------------------------------
def test_deletes(nb_server: NbServer, reconciler: Reconciler) -> None:
    reconciler.reconcile(topology())

    fewer = without(topology(), PORT_B, ACL_KEY, QOS_KEY, only(topology(), "NAT").key, AS_NAME)
    fewer = replace(fewer, PG_NAME, ports=frozenset({PORT_A}))
    fewer = replace(fewer, LB_NAME, vips={"10.96.0.10:80": f"{IP_A}:8080"})
    result = reconciler.reconcile(fewer)
    assert len(result.deletes) == 5 and not result.creates
    assert_nb_holds_exactly(nb_server, fewer)
    assert PORT_B not in nb_server.nbctl("lsp-list", SWITCH)
    assert nb_server.nbctl("--type=port-group", "acl-list", PG_NAME) == ""
    assert nb_server.nbctl("qos-list", SWITCH) == ""
    assert nb_server.nbctl("lr-nat-list", ROUTER) == ""
    assert nb_server.nbctl("--bare", "--columns=name", "list", "Address_Set") == ""

    result = reconciler.reconcile([])
    assert len(result.deletes) == len(fewer)
    # Children were detached and deleted before their containers.
    with_parent = [d.row.parent() is not None for d in result.deletes]
    assert with_parent == sorted(with_parent, reverse=True)
    snap = assert_nb_holds_exactly(nb_server, [])
    assert all(not snap.tables[t] for t in _KOVN_TABLES), {
        t: len(snap.tables[t]) for t in _KOVN_TABLES}
    assert nb_server.nbctl("show") == ""
    assert not reconciler.reconcile([])


def test_deleted_rows_leave_no_reference_behind(nb_server: NbServer,
                                               reconciler: Reconciler) -> None:
    """Rows deleted in the same transaction that changes the rows referring to them (an LB
    and the switch using it, a port and its port group) leave no dangling reference."""
    start = replace(topology(), SWITCH, load_balancers=frozenset({LB_NAME}))
    reconciler.reconcile(start)
    desired = without(start, PORT_B, LB_NAME, ACL_KEY, SWITCH_ACL_KEY)
    desired = replace(desired, SWITCH, load_balancers=frozenset())
    desired = replace(desired, PG_NAME, ports=frozenset({PORT_A}))
    reconciler.reconcile(desired)
    snap = assert_nb_holds_exactly(nb_server, desired)
    assert snap.named("Logical_Switch", SWITCH)["load_balancer"] == []
    assert snap.names_of(snap.named("Port_Group", PG_NAME)["ports"]) == {PORT_A}
    assert not reconciler.reconcile(desired)


def test_delete_container_with_its_children(nb_server: NbServer, reconciler: Reconciler) -> None:
    """A switch and its ports go in one reconcile; so does a port group with its ACL."""
    reconciler.reconcile(topology())
    desired = without(topology(), JOIN, "join-ovn-cluster", NODE_PORT, PG_NAME, ACL_KEY)
    desired = without(desired, "ovn-cluster-join", only(desired, "Logical_Router_Static_Route").key)
    reconciler.reconcile(desired)
    assert_nb_holds_exactly(nb_server, desired)
    assert not Snapshot(nb_server).has("Logical_Switch", JOIN)


# --- rows made by hand ---------------------------------------------------------------------------
def make_hand_rows(server: NbServer) -> None:
    """An operator's own config, some of it inside kovn's rows; none carries kovn's ids."""
    server.nbctl("ls-add", "handmade")
    server.nbctl("lsp-add", "handmade", "handmade-port")
    server.nbctl("lsp-add", SWITCH, "hand-port")  # on kovn's switch
    server.nbctl("lb-add", "hand-lb", "10.96.99.1:80", "10.16.0.99:80")
    server.nbctl("ls-lb-add", SWITCH, "hand-lb")  # attached to kovn's switch
    server.nbctl("add", "Load_Balancer_Group", LBG, "load_balancer",
                 uuid_of(server, "Load_Balancer", "hand-lb"))  # in kovn's LB group
    server.nbctl("--type=port-group", "acl-add", PG_NAME, "to-lport", "500", "ip4", "drop")
    server.nbctl("add", "Port_Group", PG_NAME, "ports",
                 uuid_of(server, "Logical_Switch_Port", "hand-port"))  # in kovn's port group
    server.nbctl("--type=switch", "acl-add", SWITCH, "from-lport", "400", "ip6", "allow")
    server.nbctl("qos-add", SWITCH, "to-lport", "100", "ip6", "rate=1000")
    server.nbctl("lr-route-add", ROUTER, "192.168.0.0/24", "100.64.0.9")
    server.nbctl("lr-nat-add", ROUTER, "snat", "192.0.2.99", "10.99.0.0/16")
    server.nbctl("create", "Address_Set", "name=hand_as", 'addresses="10.0.0.1"')
    server.nbctl("pg-add", "hand_pg")


def assert_hand_rows(server: NbServer, inside_kovn_rows: bool = True) -> None:
    snap = Snapshot(server)
    hand_lb = snap.named("Load_Balancer", "hand-lb")
    assert hand_lb["vips"] == {"10.96.99.1:80": "10.16.0.99:80"}
    assert hand_lb["external_ids"] == {}
    assert snap.names_of(snap.named("Logical_Switch", "handmade")["ports"]) == {"handmade-port"}
    assert snap.has("Address_Set", "hand_as") and snap.has("Port_Group", "hand_pg")
    if not inside_kovn_rows:
        return
    assert "hand-lb" in snap.names_of(snap.named("Logical_Switch", SWITCH)["load_balancer"])
    assert "hand-lb" in snap.names_of(snap.named("Load_Balancer_Group", LBG)["load_balancer"])
    assert "hand-port" in snap.names_of(snap.named("Logical_Switch", SWITCH)["ports"])
    assert "hand-port" in snap.names_of(snap.named("Port_Group", PG_NAME)["ports"])
    assert "500 (ip4) drop" in server.nbctl("--type=port-group", "acl-list", PG_NAME)
    assert "400 (ip6) allow" in server.nbctl("--type=switch", "acl-list", SWITCH)
    assert "(ip6) rate=1000" in server.nbctl("qos-list", SWITCH)
    assert "192.168.0.0/24" in server.nbctl("lr-route-list", ROUTER)
    assert "192.0.2.99" in server.nbctl("lr-nat-list", ROUTER)


def test_hand_made_rows_survive_every_apply(nb_server: NbServer, nb: NbConnection,
                                            reconciler: Reconciler) -> None:
    reconciler.reconcile(topology())
    make_hand_rows(nb_server)
    settle(nb, nb_server)
    assert_hand_rows(nb_server)

    # Idle reconcile: hand rows are invisible to the planner.
    assert not reconciler.reconcile(topology())
    # Updates of exactly the columns and containers that hold hand rows.
    changed = replace(topology(), SWITCH, load_balancer_groups=frozenset(),
                      load_balancers=frozenset({LB_NAME}), other_config={})
    changed = replace(changed, PG_NAME, ports=frozenset({PORT_B}))
    changed = replace(changed, LB_NAME, member_of=frozenset())
    changed = replace(changed, ACL_KEY, action="allow")
    changed = replace(changed, QOS_KEY, bandwidth={"rate": 1})
    assert reconciler.reconcile(changed)
    assert_hand_rows(nb_server)
    # Deletes of kovn's siblings of hand rows, containers kept.
    fewer = without(changed, PORT_A, ACL_KEY, QOS_KEY, SWITCH_ACL_KEY, LB_NAME,
                    only(changed, "NAT").key, only(changed, "Logical_Router_Static_Route").key)
    fewer = replace(fewer, SWITCH, load_balancers=frozenset())
    fewer = replace(fewer, PG_NAME, ports=frozenset())
    assert reconciler.reconcile(fewer)
    assert_nb_holds_exactly(nb_server, fewer)
    assert_hand_rows(nb_server)
    # Everything of kovn's back again.
    reconciler.reconcile(topology())
    assert_nb_holds_exactly(nb_server, topology())
    assert_hand_rows(nb_server)
    # And all of kovn's rows gone, except the containers that hold hand rows: OVSDB would
    # delete those with them, so kovn keeps them (and says so in Plan.kept).
    emptied = reconciler.reconcile([])
    assert {(o.row.TABLE, o.row.key) for o in emptied.kept} == KEPT_CONTAINERS
    snap = Snapshot(nb_server)
    assert not snap.dangling()
    assert {(t, snap.ident(t, r)) for t in _KOVN_TABLES for r in snap.owned(t)} == KEPT_CONTAINERS
    assert_hand_rows(nb_server, inside_kovn_rows=False)
    # What the kept containers hold by hand is all still there.
    assert "hand-port" in snap.names_of(snap.named("Logical_Switch", SWITCH)["ports"])
    assert "hand-lb" in snap.names_of(snap.named("Logical_Switch", SWITCH)["load_balancer"])
    assert "500 (ip4) drop" in nb_server.nbctl("--type=port-group", "acl-list", PG_NAME)
    assert "192.0.2.99" in nb_server.nbctl("lr-nat-list", ROUTER)
    assert not reconciler.reconcile([])


KEPT_CONTAINERS = {("Logical_Switch", SWITCH), ("Port_Group", PG_NAME),
                   ("Logical_Router", ROUTER)}


def test_hand_made_rows_inside_deleted_kovn_containers(nb_server: NbServer, nb: NbConnection,
                                                       reconciler: Reconciler) -> None:
    reconciler.reconcile(topology())
    make_hand_rows(nb_server)
    settle(nb, nb_server)
    reconciler.reconcile([])
    snap = Snapshot(nb_server)
    assert snap.has("Logical_Switch_Port", "hand-port")
    assert "500 (ip4) drop" in nb_server.nbctl("--type=port-group", "acl-list", PG_NAME)
    # Once the hand rows are gone, the kept containers go at the next reconcile.
    nb_server.nbctl("lsp-del", "hand-port")
    nb_server.nbctl("--type=port-group", "acl-del", PG_NAME)
    nb_server.nbctl("--type=switch", "acl-del", SWITCH)
    nb_server.nbctl("qos-del", SWITCH)
    nb_server.nbctl("lr-route-del", ROUTER, "192.168.0.0/24")
    nb_server.nbctl("lr-nat-del", ROUTER, "snat", "10.99.0.0/16")
    settle(nb, nb_server)
    final = reconciler.reconcile([])
    assert not final.kept
    assert {(d.row.TABLE, d.row.key) for d in final.deletes} == KEPT_CONTAINERS


# --- drift repair --------------------------------------------------------------------------------
def test_drift_is_repaired(nb_server: NbServer, nb: NbConnection, reconciler: Reconciler) -> None:
    desired = topology()
    reconciler.reconcile(desired)
    port_a = uuid_of(nb_server, "Logical_Switch_Port", PORT_A)

    nb_server.nbctl("lsp-del", PORT_B)  # deleted by hand
    nb_server.nbctl("set", "Logical_Switch_Port", PORT_A, 'addresses="00:00:00:00:00:01 1.2.3.4"')
    nb_server.nbctl("set", "Logical_Switch_Port", PORT_A, "options:hand=1")  # key added by hand
    nb_server.nbctl("remove", "Logical_Switch_Port", PORT_A, "options", "iface-id-ver")
    nb_server.nbctl("remove", "Port_Group", PG_NAME, "ports", port_a)  # out of its port group
    nb_server.nbctl("--type=port-group", "acl-del", PG_NAME)  # kovn's ACL gone
    nb_server.nbctl("set", "Load_Balancer", LB_NAME, 'vips:"10.96.0.10:80"="1.1.1.1:1"')
    nb_server.nbctl("clear", "Logical_Switch", SWITCH, "load_balancer_group")
    nb_server.nbctl("clear", "Load_Balancer_Group", LBG, "load_balancer")  # LB out of group
    nb_server.nbctl("lr-nat-del", ROUTER)
    nb_server.nbctl("set", "Address_Set", AS_NAME, "addresses=[]")
    settle(nb, nb_server)

    seen = reconciler.plan(desired)
    assert sorted(c.row.key for c in seen.creates) == sorted(
        [PORT_B, ACL_KEY, only(desired, "NAT").key])
    assert sorted(u.row.key for u in seen.updates) == sorted(
        [PORT_A, PG_NAME, LB_NAME, SWITCH, AS_NAME])
    assert not seen.deletes

    reconciler.reconcile(desired)
    snap = assert_nb_holds_exactly(nb_server, desired)
    assert nbctl_get(nb_server, "Logical_Switch_Port", PORT_A, "addresses") == (
        f'["{MAC_A} {IP_A}"]')
    assert nbctl_get(nb_server, "Logical_Switch_Port", PORT_A, "options") == (
        "{iface-id-ver=uid-a, requested-chassis=node1}")
    # The re-created port is back on its switch and in the port group with the repaired one.
    assert snap.names_of(snap.named("Port_Group", PG_NAME)["ports"]) == {PORT_A, PORT_B}
    assert nb_server.nbctl("lsp-get-ls", PORT_B).endswith(f"({SWITCH})")
    assert uuid_of(nb_server, "Logical_Switch_Port", PORT_A) == port_a  # repaired in place
    assert not reconciler.reconcile(desired)


def test_kovn_ids_removed_by_hand_make_the_row_foreign(nb_server: NbServer, nb: NbConnection,
                                                      reconciler: Reconciler) -> None:
    """kovn does not adopt rows: stripping the owner keys turns a kovn row into a hand row."""
    reconciler.reconcile(topology())
    nb_server.nbctl("remove", "Address_Set", AS_NAME, "external_ids", "kovn.io/owner")
    settle(nb, nb_server)
    with pytest.raises(NorthboundError, match=AS_NAME):
        reconciler.reconcile(topology())
    assert not reconciler.reconcile(without(topology(), AS_NAME))
    assert Snapshot(nb_server).has("Address_Set", AS_NAME)  # left alone


# --- owner-scoped reconcile ----------------------------------------------------------------------
def _rows_not_of(snap: Snapshot, owner: Owner) -> dict[str, list[dict[str, Any]]]:
    ids = owner.ids()
    return {t: [r for r in rs if not all(r.get("external_ids", {}).get(k) == v
                                         for k, v in ids.items())]
            for t, rs in snap.tables.items()}


def test_owner_scoped_reconcile(nb_server: NbServer, reconciler: Reconciler) -> None:
    reconciler.reconcile(topology())
    before = Snapshot(nb_server)
    port_b = before.named("Logical_Switch_Port", PORT_B)

    # Pod a changes; pod b (and everyone else) is not in desired, and must not be touched.
    new_a = pod_a_rows(options={"requested-chassis": "node2"})
    result = reconciler.reconcile(new_a, owners={POD_A})
    assert [u.row.key for u in result.updates] == [PORT_A]
    assert not result.creates and not result.deletes
    after = Snapshot(nb_server)
    assert _rows_not_of(after, POD_A) == _rows_not_of(before, POD_A)
    assert nbctl_get(nb_server, "Logical_Switch_Port", PORT_A, "options") == (
        "{requested-chassis=node2}")

    # Pod a goes away: only its rows are deleted.
    result = reconciler.reconcile([], owners={POD_A})
    assert sorted(d.row.key for d in result.deletes) == sorted([PORT_A, QOS_KEY])
    after = Snapshot(nb_server)
    assert after.named("Logical_Switch_Port", PORT_B) == port_b
    assert not after.has("Logical_Switch_Port", PORT_A)
    assert nb_server.nbctl("qos-list", SWITCH) == ""
    # The port group (another owner's) is kept; OVSDB drops the weak reference by itself.
    assert after.names_of(after.named("Port_Group", PG_NAME)["ports"]) == {PORT_B}

    # Scopes that do not include a row never see it.
    assert not reconciler.reconcile(pod_b_rows(), owners={POD_B})
    assert not reconciler.reconcile([], owners={Owner(names.OwnerType.POD, "default/nobody")})
    assert not reconciler.plan([], owners=set())
    assert Snapshot(nb_server).named("Logical_Switch_Port", PORT_B) == port_b

    # Pod a comes back, scoped again.
    assert len(reconciler.reconcile(pod_a_rows(), owners={POD_A}).creates) == 2
    assert Snapshot(nb_server).named("Logical_Switch_Port", PORT_B) == port_b


def test_observe_scoped_by_owner(reconciler: Reconciler) -> None:
    reconciler.reconcile(topology())
    everything = reconciler.observe()
    assert {o.row.ident for o in everything} == {r.ident for r in topology()}
    assert {o.row.key for o in reconciler.observe({POD_A})} == {PORT_A, QOS_KEY}
    assert {o.row.key for o in reconciler.observe({POD_A, SVC})} == {PORT_A, QOS_KEY, LB_NAME}
    assert {o.row.key for o in reconciler.observe({CLUSTER})} == {ROUTER, LBG}


# --- errors leave NB unchanged -------------------------------------------------------------------
CLASHES = [
    pytest.param(("ls-add", "clash-switch"),
                 LogicalSwitch(owner=SUBNET, name="clash-switch"), id="switch"),
    pytest.param(("lsp-add", "clash-switch", "default_web-3"),
                 pod_port(Owner("Pod", "default/web-3"), "default_web-3", "0a:00:00:00:00:09",
                          "10.16.0.9", "uid-3"), id="port"),
    pytest.param(("lb-add", "Service_default/other_TCP", "10.96.0.20:80", "10.16.0.9:80"),
                 LoadBalancer(owner=SVC, name="Service_default/other_TCP"), id="load-balancer"),
    pytest.param(("pg-add", "kovn_np_default_other"),
                 PortGroup(owner=NP, name="kovn_np_default_other"), id="port-group"),
    pytest.param(("lr-add", "GR_node1"), LogicalRouter(owner=NODE, name="GR_node1"), id="router"),
]


@pytest.mark.parametrize(("hand", "clashing"), CLASHES)
def test_create_clashing_with_hand_made_row(nb_server: NbServer, nb: NbConnection,
                                            reconciler: Reconciler, hand: tuple[str, ...],
                                            clashing: NbRow) -> None:
    reconciler.reconcile(topology())
    if hand[0] == "lsp-add":
        nb_server.nbctl("ls-add", hand[1])
    nb_server.nbctl(*hand)
    settle(nb, nb_server)
    before = Snapshot(nb_server)

    # Deletes, updates and other creates come with it in the one transaction.
    desired = replace(without(topology(), PORT_B), PG_NAME, ports=frozenset({PORT_A}))
    desired = replace(desired, PORT_A, addresses=("0a:58:0a:10:00:05 10.16.0.55",))
    desired = [*desired, AddressSet(owner=NP, name="kovn_as_new"), clashing]
    with pytest.raises(NorthboundError) as err:
        reconciler.reconcile(desired)
    assert isinstance(err.value.__cause__, ConflictError)
    assert repr(clashing.key) in str(err.value)
    assert "not kovn's" in str(err.value)
    assert Snapshot(nb_server) == before  # nothing at all was written

    # Without the clash, the rest goes through.
    assert reconciler.reconcile(desired[:-1])
    assert_nb_holds_exactly(nb_server, desired[:-1])


MISSING = [
    pytest.param(pod_port(POD_A, "default_orphan", MAC_A, IP_A, "uid-x", switch="no-such-switch"),
                 "no-such-switch", id="port-without-switch"),
    pytest.param(PortGroup(owner=NP, name="kovn_np_x", ports=frozenset({"no-such-port"})),
                 "no-such-port", id="port-group-member"),
    pytest.param(LogicalSwitch(owner=SUBNET, name="s2",
                               load_balancers=frozenset({"Service_default/no-such_TCP"})),
                 "Service_default/no-such_TCP", id="switch-load-balancer"),
    pytest.param(ACL(owner=NP, port_group="no_such_pg", direction="to-lport", priority=1,
                     match="ip4", action="drop"), "no_such_pg", id="acl-without-port-group"),
    pytest.param(NAT(owner=NODE, router="GR_nowhere", type="snat", external_ip="192.0.2.5",
                     logical_ip="10.16.0.0/16"), "GR_nowhere", id="nat-without-router"),
]


@pytest.mark.parametrize(("orphan", "missing"), MISSING)
def test_reference_to_missing_row(nb_server: NbServer, reconciler: Reconciler, orphan: NbRow,
                                  missing: str) -> None:
    reconciler.reconcile(topology())
    before = Snapshot(nb_server)
    desired = replace(without(topology(), PORT_B), PG_NAME, ports=frozenset({PORT_A}))
    desired = [*replace(desired, SWITCH, other_config={}),
               AddressSet(owner=NP, name="kovn_as_new"), orphan]
    with pytest.raises(NorthboundError, match="does not exist") as err:
        reconciler.reconcile(desired)
    assert repr(missing) in str(err.value)
    assert isinstance(err.value.__cause__, LookupError)
    assert Snapshot(nb_server) == before


def test_reference_to_a_hand_made_row_is_resolved(nb_server: NbServer, nb: NbConnection,
                                                  reconciler: Reconciler) -> None:
    """A kovn port may live on a switch kovn does not own (resolution is by name)."""
    nb_server.nbctl("ls-add", "handmade")
    settle(nb, nb_server)
    desired = pod_b_rows(switch="handmade")
    reconciler.reconcile(desired)
    assert nb_server.nbctl("lsp-get-ls", PORT_B).endswith("(handmade)")
    assert not reconciler.reconcile(desired)
    reconciler.reconcile([])
    assert nb_server.nbctl("lsp-list", "handmade") == ""
    assert Snapshot(nb_server).has("Logical_Switch", "handmade")


def test_duplicate_desired_rows_raise_before_writing(nb_server: NbServer,
                                                     reconciler: Reconciler) -> None:
    before = Snapshot(nb_server)
    with pytest.raises(ValueError, match=PORT_A):
        reconciler.reconcile([*topology(), *pod_a_rows(options={})])
    assert Snapshot(nb_server) == before


# --- apply() of a plan computed earlier ----------------------------------------------------------
def test_apply_precomputed_plan(nb_server: NbServer, reconciler: Reconciler) -> None:
    planned = reconciler.plan(topology())
    assert len(planned.creates) == len(topology())
    assert Snapshot(nb_server).tables["Logical_Switch"] == []  # plan() writes nothing
    assert reconciler.apply(planned) == planned
    assert_nb_holds_exactly(nb_server, topology())
    assert not reconciler.plan(topology())
