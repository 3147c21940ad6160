"""Typed, frozen descriptions of the NB rows kovn writes.

controller/ builds these from Kubernetes objects; the reconciler compares them with what NB
holds. The machinery (field kinds, Owner, the NbRow base with `columns`, `references`,
`parent`, `member_of`, `from_db`) lives in northbound.rowbase and is re-exported here; this
module is the catalogue of row classes, and fixes at import which side manages each reference
column (northbound.membership): a row class whose field writes a column that members declare
does not import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from northbound import names
from northbound.membership import MEMBER_SIDE, Membership, check_one_side
from northbound.rowbase import (
    CLUSTER,
    MAP,
    OPTIONAL,
    PLAIN_KINDS,
    SCALAR,
    SET,
    FieldSpec,
    NbRow,
    Owner,
    ParentRef,
    _col,
    _parent,
    _ref,
    column_kinds,
    field_specs,
)

__all__ = [  # the row classes, and the rowbase/membership names callers import from here
    "ACL", "CLUSTER", "CONTAINMENT", "MAP", "MEMBER_SIDE", "NAT", "OPTIONAL", "PLAIN_KINDS",
    "REFERENCES", "ROW_TYPES", "SCALAR", "SET", "TABLES", "AddressSet", "ChassisTemplateVar",
    "FieldSpec", "LoadBalancer", "LoadBalancerGroup", "LogicalRouter", "LogicalRouterPort",
    "LogicalSwitch", "LogicalSwitchPort", "Membership", "Meter", "MeterBand", "NbRow", "Owner",
    "ParentRef",
    "PortGroup", "QoS", "RouterPolicy", "StaticRoute", "SwitchACL", "column_kinds",
    "field_specs",
]


# --- switches and routers ----------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class LogicalSwitch(NbRow):
    """load_balancers stays container side (see northbound.membership): Services reach pod
    switches through the cluster LB group, never directly."""

    TABLE: ClassVar[str] = "Logical_Switch"
    name: str = _col()
    other_config: Mapping[str, str] = _col(MAP, default={})
    load_balancers: frozenset[str] = _ref("load_balancer", "Load_Balancer")
    load_balancer_groups: frozenset[str] = _ref("load_balancer_group", "Load_Balancer_Group")


@dataclass(frozen=True, kw_only=True)
class LogicalSwitchPort(NbRow):
    TABLE: ClassVar[str] = "Logical_Switch_Port"
    name: str = _col()
    switch: str = _parent("Logical_Switch", "ports")
    type: str = _col(default="")
    addresses: tuple[str, ...] = _col(SET, default=())
    port_security: tuple[str, ...] = _col(SET, default=())
    options: Mapping[str, str] = _col(MAP, default={})
    enabled: bool | None = _col(OPTIONAL, default=None)


@dataclass(frozen=True, kw_only=True)
class LogicalRouter(NbRow):
    TABLE: ClassVar[str] = "Logical_Router"
    name: str = _col()
    options: Mapping[str, str] = _col(MAP, default={})
    load_balancer_groups: frozenset[str] = _ref("load_balancer_group", "Load_Balancer_Group")
    # load_balancer is member side: a Service's LB declares LogicalRouter.membership(GR_<node>).


@dataclass(frozen=True, kw_only=True)
class LogicalRouterPort(NbRow):
    TABLE: ClassVar[str] = "Logical_Router_Port"
    name: str = _col()
    router: str = _parent("Logical_Router", "ports")
    mac: str = _col()
    networks: tuple[str, ...] = _col(SET)
    peer: str | None = _col(OPTIONAL, default=None)
    options: Mapping[str, str] = _col(MAP, default={})


@dataclass(frozen=True, kw_only=True)
class StaticRoute(NbRow):
    TABLE: ClassVar[str] = "Logical_Router_Static_Route"
    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("router", "route_table", "ip_prefix", "nexthop")
    row_key: str = field(default="", metadata={"kind": "key"})
    router: str = _parent("Logical_Router", "static_routes")
    ip_prefix: str = _col()
    nexthop: str = _col()
    route_table: str = _col(default="")
    policy: str | None = _col(OPTIONAL, default=None)
    output_port: str | None = _col(OPTIONAL, default=None)
    options: Mapping[str, str] = _col(MAP, default={})


@dataclass(frozen=True, kw_only=True)
class RouterPolicy(NbRow):
    """A Logical_Router_Policy: runs after the routing decision and may override it
    (`reroute` to `nexthops`), e.g. a node's pods leaving through that node's gateway."""

    TABLE: ClassVar[str] = "Logical_Router_Policy"
    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("router", "priority", "match")
    row_key: str = field(default="", metadata={"kind": "key"})
    router: str = _parent("Logical_Router", "policies")
    priority: int = _col()
    match: str = _col()
    action: str = _col()
    nexthops: tuple[str, ...] = _col(SET, default=())
    options: Mapping[str, str] = _col(MAP, default={})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.priority <= 32767:
            raise ValueError(f"router policy priority {self.priority} outside 0..32767")
        if self.action not in ("allow", "drop", "reroute"):
            raise ValueError(f"router policy action {self.action!r} is not allow|drop|reroute")


@dataclass(frozen=True, kw_only=True)
class NAT(NbRow):
    TABLE: ClassVar[str] = "NAT"
    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("router", "type", "logical_ip", "external_ip")
    row_key: str = field(default="", metadata={"kind": "key"})
    router: str = _parent("Logical_Router", "nat")
    type: str = _col()
    external_ip: str = _col()
    logical_ip: str = _col()
    logical_port: str | None = _col(OPTIONAL, default=None)
    external_mac: str | None = _col(OPTIONAL, default=None)
    options: Mapping[str, str] = _col(MAP, default={})


# --- services ----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class LoadBalancer(NbRow):
    TABLE: ClassVar[str] = "Load_Balancer"
    name: str = _col()
    vips: Mapping[str, str] = _col(MAP, default={})
    protocol: str | None = _col(OPTIONAL, default="tcp")
    options: Mapping[str, str] = _col(MAP, default={})
    selection_fields: tuple[str, ...] = _col(SET, default=())


@dataclass(frozen=True, kw_only=True)
class LoadBalancerGroup(NbRow):
    """A group's owner creates and deletes it; its members are not its owner's business.

    No external_ids in NB schema 7.0.0: the owner is read back from the name
    (names.lb_group_owner), so a row whose owner disagrees with its name is refused here.
    `load_balancer` is member side: a Service's load balancer declares
    `LoadBalancerGroup.membership(names.CLUSTER_LB_GROUP)` and joins by one mutation, without
    the Cluster owner's rows being recomputed.
    """

    TABLE: ClassVar[str] = "Load_Balancer_Group"
    HAS_EXTERNAL_IDS: ClassVar[bool] = False
    owner: Owner = field(default=CLUSTER, metadata={"kind": "owner"})
    name: str = _col()

    def __post_init__(self) -> None:
        super().__post_init__()
        parsed = names.lb_group_owner(self.name)
        if parsed is None or Owner(*parsed) != self.owner:
            expected = f"owner {Owner(*parsed)}" if parsed else "no owner: not a kovn name"
            raise ValueError(
                f"Load_Balancer_Group {self.name!r} cannot belong to {self.owner}: the table has "
                f"no external_ids, so the name says the owner, and it says {expected} (build "
                "names with names.CLUSTER_LB_GROUP / names.node_lb_group)"
            )

    @classmethod
    def owner_from_db(cls, columns: Mapping[str, Any]) -> Owner:
        parsed = names.lb_group_owner(columns.get("name", ""))
        return Owner(*parsed) if parsed else Owner("", "")


@dataclass(frozen=True, kw_only=True)
class ChassisTemplateVar(NbRow):
    """The values ovn-controller on chassis `chassis` substitutes for `^NAME` in template
    load balancers (`options:template=true`): one row per chassis (the table's index), owned
    by its Node, so one load balancer serves every node with that node's own address and
    endpoints (controller/templates.py)."""

    TABLE: ClassVar[str] = "Chassis_Template_Var"
    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("chassis",)
    chassis: str = _col()
    variables: Mapping[str, str] = _col(MAP, default={})


# --- policy ------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class PortGroup(NbRow):
    TABLE: ClassVar[str] = "Port_Group"
    name: str = _col()
    ports: frozenset[str] = _ref("ports", "Logical_Switch_Port")


@dataclass(frozen=True, kw_only=True)
class AddressSet(NbRow):
    TABLE: ClassVar[str] = "Address_Set"
    name: str = _col()
    addresses: tuple[str, ...] = _col(SET, default=())


_ACL_ACTIONS = frozenset({"allow", "allow-related", "allow-stateless", "drop", "reject", "pass"})


@dataclass(frozen=True, kw_only=True)
class _AclColumns(NbRow):
    TABLE: ClassVar[str] = "ACL"
    row_key: str = field(default="", metadata={"kind": "key"})
    direction: str = _col()
    priority: int = _col()
    match: str = _col()
    action: str = _col()
    name: str | None = _col(OPTIONAL, default=None)
    log: bool = _col(default=False)
    severity: str | None = _col(OPTIONAL, default=None)
    meter: str | None = _col(OPTIONAL, default=None)
    options: Mapping[str, str] = _col(MAP, default={})

    def __post_init__(self) -> None:
        super().__post_init__()
        # Fail at construction, not at commit time (ovsdbapp's ACL commands do the same).
        if not 0 <= self.priority <= 32767:
            raise ValueError(f"ACL priority {self.priority} outside 0..32767")
        if self.direction not in ("from-lport", "to-lport"):
            raise ValueError(f"ACL direction {self.direction!r} is not from-lport|to-lport")
        if self.action not in _ACL_ACTIONS:
            raise ValueError(f"ACL action {self.action!r} is not one of {sorted(_ACL_ACTIONS)}")


@dataclass(frozen=True, kw_only=True)
class ACL(_AclColumns):
    """An ACL in a Port_Group: the scalable home of NetworkPolicy rules."""

    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("port_group", "direction", "priority", "match")
    KEY_PREFIX: ClassVar[str] = "pg:"
    port_group: str = _parent("Port_Group", "acls")


@dataclass(frozen=True, kw_only=True)
class SwitchACL(_AclColumns):
    """An ACL attached directly to a Logical_Switch (e.g. private subnet isolation)."""

    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("switch", "direction", "priority", "match")
    KEY_PREFIX: ClassVar[str] = "ls:"
    switch: str = _parent("Logical_Switch", "acls")


@dataclass(frozen=True, kw_only=True)
class QoS(NbRow):
    TABLE: ClassVar[str] = "QoS"
    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("switch", "direction", "priority", "match")
    row_key: str = field(default="", metadata={"kind": "key"})
    switch: str = _parent("Logical_Switch", "qos_rules")
    direction: str = _col()
    priority: int = _col()
    match: str = _col()
    bandwidth: Mapping[str, int] = _col(MAP, default={})
    action: Mapping[str, int] = _col(MAP, default={})


@dataclass(frozen=True, kw_only=True)
class Meter(NbRow):
    """A rate limit by name (ACL.meter): e.g. how many ACL log lines per second."""

    TABLE: ClassVar[str] = "Meter"
    name: str = _col()
    unit: str = _col(default="pktps")
    fair: bool | None = _col(OPTIONAL, default=None)


@dataclass(frozen=True, kw_only=True)
class MeterBand(NbRow):
    """The band of a Meter (one per meter here): drop beyond `rate` per second."""

    TABLE: ClassVar[str] = "Meter_Band"
    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("meter",)
    row_key: str = field(default="", metadata={"kind": "key"})
    meter: str = _parent("Meter", "bands")
    action: str = _col(default="drop")
    rate: int = _col()
    burst_size: int = _col(default=0)


@dataclass(frozen=True, kw_only=True)
class DNS(NbRow):
    """Names ovn-controller answers itself for the ports of the switches holding this row
    (`Logical_Switch.dns_records`, member side): `records` maps a lowercase name to its
    space-separated addresses. The table names nothing, so `row_key` identifies the row."""

    TABLE: ClassVar[str] = "DNS"
    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("row_key",)
    row_key: str = field(default="", metadata={"kind": "key"})
    records: Mapping[str, str] = _col(MAP, default={})


ROW_TYPES: tuple[type[NbRow], ...] = (
    LogicalSwitch, LogicalSwitchPort, LogicalRouter, LogicalRouterPort, StaticRoute,
    RouterPolicy, NAT, LoadBalancer, LoadBalancerGroup, ChassisTemplateVar, PortGroup,
    AddressSet, ACL, SwitchACL, QoS, DNS, Meter, MeterBand,
)
TABLES: tuple[str, ...] = tuple(dict.fromkeys(t.TABLE for t in ROW_TYPES))
NAMED_TABLES: tuple[str, ...] = tuple(dict.fromkeys(
    t.TABLE for t in ROW_TYPES if t.KEY_FIELDS == ("name",)))
"""Tables whose rows OVN names uniquely: the reconciler finds them by name."""


REFERENCES: dict[tuple[str, str], str] = {
    (cls.TABLE, f.column): f.table
    for cls in ROW_TYPES for f in field_specs(cls) if f.kind == "ref"
}
"""(container table, column) -> referenced table of every container-side reference field."""
CONTAINMENT: dict[tuple[str, str], str] = {
    (f.table, f.column): cls.TABLE
    for cls in ROW_TYPES for f in field_specs(cls) if f.kind == "parent"
}
"""(container table, column) -> child table of every parent field: the columns through which
non-root rows are held (a Port_Group's and a Logical_Switch's `acls` both hold ACLs)."""
check_one_side(REFERENCES, CONTAINMENT)
