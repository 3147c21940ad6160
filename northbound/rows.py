"""Typed, frozen descriptions of the NB rows kovn writes.

controller/ builds these from Kubernetes objects; the reconciler compares them with what NB
holds. A row never carries UUIDs: it names its parent (the row whose column holds it) and the
rows it references, and the reconciler resolves names inside the transaction. Each field says
through its metadata which OVSDB column it is and how it is stored, so converting to and from
the database is generic (see `columns`, `references`, `from_db`).

Column forms follow the python IDL: optional scalars are lists of 0 or 1 item, sets are sorted
lists, maps are dicts. Equality of two rows is equality of these forms.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from northbound import names

SCALAR, OPTIONAL, SET, MAP = "scalar", "optional", "set", "map"


def _col(kind: str = SCALAR, name: str | None = None, default: Any = dataclasses.MISSING) -> Any:
    meta = {"kind": kind, "column": name}
    if default is dataclasses.MISSING:
        return field(metadata=meta)
    if isinstance(default, (dict, list, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _ref(column: str, table: str) -> Any:
    """A set of names of other rows, stored as a reference column (weak or strong)."""
    return field(default=frozenset(), metadata={"kind": "ref", "column": column, "table": table})


def _parent(table: str, column: str) -> Any:
    """Name of the row whose `column` holds this (non-root) row."""
    return field(metadata={"kind": "parent", "table": table, "column": column})


@dataclass(frozen=True)
class Owner:
    """The Kubernetes object a row exists for: `kind` and `ns/name` (or `name`)."""

    type: str
    name: str

    def __str__(self) -> str:
        return f"{self.type} {self.name}"

    def ids(self) -> dict[str, str]:
        return names.owner_ids(self.type, self.name)


CLUSTER = Owner(names.OwnerType.CLUSTER, names.CLUSTER_OWNER)


@dataclass(frozen=True)
class ParentRef:
    table: str
    name: str
    column: str


def _canonical(kind: str, value: Any) -> Any:
    if kind == OPTIONAL:
        if value is None or value == []:
            return []
        return list(value) if isinstance(value, (list, tuple)) else [value]
    if kind == SET:
        return sorted(value)
    if kind == MAP:
        return {str(k): v for k, v in dict(value).items()}
    return value


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str
    column: str
    table: str = ""


@functools.cache
def field_specs(cls: type) -> tuple[FieldSpec, ...]:
    """The database meaning of each field of a row class (computed once per class)."""
    return tuple(
        FieldSpec(f.name, f.metadata.get("kind", ""), f.metadata.get("column") or f.name,
                  f.metadata.get("table", ""))
        for f in dataclasses.fields(cls)
    )


_PLAIN = (SCALAR, OPTIONAL, SET, MAP)


@dataclass(frozen=True, kw_only=True)
class NbRow:
    """Base of every desired row. Subclasses set TABLE and, for unnamed tables, KEY_FIELDS."""

    TABLE: ClassVar[str]
    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("name",)
    """Fields whose values identify the row within its table when no explicit key is given."""
    KEY_PREFIX: ClassVar[str] = ""
    """Keeps keys of one table apart when rows of several classes share it (ACLs)."""
    HAS_EXTERNAL_IDS: ClassVar[bool] = True

    owner: Owner = field(metadata={"kind": "owner"})
    extra_ids: Mapping[str, str] = field(default_factory=dict, metadata={"kind": "extra"})

    @property
    def NAMED(self) -> bool:
        """Rows of OVN-named tables are identified by their (unique) name column."""
        return self.KEY_FIELDS == ("name",)

    @property
    def key(self) -> str:
        explicit = getattr(self, "row_key", "")
        if explicit:
            return explicit
        return self.KEY_PREFIX + "|".join(str(getattr(self, f)) for f in self.KEY_FIELDS)

    @property
    def ident(self) -> tuple[str, str]:
        return (self.TABLE, self.key)

    def external_ids(self) -> dict[str, str]:
        ids = dict(self.extra_ids)
        ids.update(self.owner.ids())
        if self.KEY_FIELDS != ("name",):
            ids[names.ROW_KEY] = self.key
        return ids

    def columns(self) -> dict[str, Any]:
        """Plain columns, in IDL form, that the reconciler writes exactly."""
        cols = {
            f.column: _canonical(f.kind, getattr(self, f.name))
            for f in field_specs(type(self))
            if f.kind in _PLAIN
        }
        if self.HAS_EXTERNAL_IDS:
            cols["external_ids"] = self.external_ids()
        return cols

    def references(self) -> dict[str, tuple[str, frozenset[str]]]:
        """Reference columns: column -> (target table, names of kovn rows it must hold)."""
        return {
            f.column: (f.table, frozenset(getattr(self, f.name)))
            for f in field_specs(type(self))
            if f.kind == "ref"
        }

    def parent(self) -> ParentRef | None:
        for f in field_specs(type(self)):
            if f.kind == "parent":
                return ParentRef(f.table, getattr(self, f.name), f.column)
        return None

    @classmethod
    def from_db(
        cls,
        columns: Mapping[str, Any],
        parent: str | None,
        references: Mapping[str, frozenset[str]],
    ) -> NbRow:
        """Rebuild a row from the database's view (the inverse of columns/references/parent)."""
        kwargs: dict[str, Any] = {}
        ids = dict(columns.get("external_ids", {}))
        for f in field_specs(cls):
            kind = f.kind
            if kind in _PLAIN:
                value = columns[f.column]
                if kind == OPTIONAL:
                    value = value[0] if value else None
                elif kind == SET:
                    value = tuple(sorted(value))
                elif kind == MAP:
                    value = dict(value)
                kwargs[f.name] = value
            elif kind == "ref":
                kwargs[f.name] = frozenset(references.get(f.column, ()))
            elif kind == "parent":
                kwargs[f.name] = parent or ""
            elif f.name == "row_key":
                kwargs[f.name] = ids.get(names.ROW_KEY, "")
        if cls.HAS_EXTERNAL_IDS:
            kwargs["owner"] = Owner(ids.get(names.OWNER_TYPE_KEY, ""), ids.get(names.OWNER_KEY, ""))
            for k in (*names.OWNED_KEYS, names.ROW_KEY):
                ids.pop(k, None)
            kwargs["extra_ids"] = ids
        else:
            kwargs["owner"] = CLUSTER
        return cls(**kwargs)


# --- switches and routers ----------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class LogicalSwitch(NbRow):
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
    load_balancers: frozenset[str] = _ref("load_balancer", "Load_Balancer")
    load_balancer_groups: frozenset[str] = _ref("load_balancer_group", "Load_Balancer_Group")


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
    """No external_ids in the NB schema: kovn owns the groups named in names.OWNED_LB_GROUPS."""

    TABLE: ClassVar[str] = "Load_Balancer_Group"
    HAS_EXTERNAL_IDS: ClassVar[bool] = False
    owner: Owner = field(default=CLUSTER, metadata={"kind": "owner"})
    name: str = _col()
    load_balancers: frozenset[str] = _ref("load_balancer", "Load_Balancer")


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
    options: Mapping[str, str] = _col(MAP, default={})

    def __post_init__(self) -> None:
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


ROW_TYPES: tuple[type[NbRow], ...] = (
    LogicalSwitch, LogicalSwitchPort, LogicalRouter, LogicalRouterPort, StaticRoute, NAT,
    LoadBalancer, LoadBalancerGroup, PortGroup, AddressSet, ACL, SwitchACL, QoS,
)
TABLES: tuple[str, ...] = tuple(dict.fromkeys(t.TABLE for t in ROW_TYPES))
