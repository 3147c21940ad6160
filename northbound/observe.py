"""Read kovn-owned rows out of the IDL replica and turn them back into typed rows.

Only rows carrying kovn's ownership keys are returned, and reference columns only list kovn
rows, so a row a person attached by hand (their own LB on a kovn switch, their own port in a
kovn port group) is invisible to the planner and survives every apply.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from northbound.owner_index import OwnerIndex, holds, owner_of, row_is_owned
from northbound.plan import Observed
from northbound.rows import (
    ACL,
    ROW_TYPES,
    NbRow,
    Owner,
    SwitchACL,
    field_specs,
)

__all__ = ["OwnerIndex", "monitored_columns", "observe", "owner_of"]

ROW_CLASS: dict[str, type[NbRow]] = {}
for _cls in ROW_TYPES:
    ROW_CLASS.setdefault(_cls.TABLE, _cls)

# (parent table, column) pairs through which non-root rows are held.
CONTAINMENT: tuple[tuple[str, str], ...] = (
    ("Logical_Switch", "ports"),
    ("Logical_Switch", "acls"),
    ("Logical_Switch", "qos_rules"),
    ("Logical_Router", "ports"),
    ("Logical_Router", "static_routes"),
    ("Logical_Router", "nat"),
    ("Port_Group", "acls"),
)


def _parents(
    tables: Mapping[str, Any], owned: set[Any]
) -> tuple[dict[Any, tuple[str, str, Any]], dict[Any, int]]:
    """(child uuid -> (parent table, parent name, parent uuid),
    container uuid -> number of rows it holds that are not kovn's)."""
    held: dict[Any, tuple[str, str, Any]] = {}
    foreign: dict[Any, int] = {}
    for table, column in CONTAINMENT:
        if table not in tables:
            continue
        for parent in tables[table].rows.values():
            for child in getattr(parent, column):
                held[child.uuid] = (table, parent.name, parent.uuid)
                if child.uuid not in owned:
                    foreign[parent.uuid] = foreign.get(parent.uuid, 0) + 1
    return held, foreign


def _db_columns(cls: type[NbRow], idl_row: Any) -> dict[str, Any]:
    cols = {
        f.column: getattr(idl_row, f.column)
        for f in field_specs(cls)
        if f.kind in ("scalar", "optional", "set", "map")
    }
    if cls.HAS_EXTERNAL_IDS:
        cols["external_ids"] = idl_row.external_ids
    return cols


def _db_references(cls: type[NbRow], idl_row: Any, owned: Any) -> dict[str, frozenset[str]]:
    return {
        f.column: frozenset(t.name for t in getattr(idl_row, f.column) if t.uuid in owned)
        for f in field_specs(cls)
        if f.kind == "ref"
    }


def _scoped_parents(
    tables: Mapping[str, Any], candidates: list[tuple[str, Any]], index: OwnerIndex
) -> tuple[dict[Any, tuple[str, str, Any]], dict[Any, int]]:
    """_parents() for just the candidate rows: the containers are few (switches, routers,
    port groups), so a membership test per container beats walking every child in NB."""
    held: dict[Any, tuple[str, str, Any]] = {}
    foreign: dict[Any, int] = {}
    child_tables = {"Logical_Switch": {"ports": "Logical_Switch_Port", "acls": "ACL",
                                       "qos_rules": "QoS"},
                    "Logical_Router": {"ports": "Logical_Router_Port",
                                       "static_routes": "Logical_Router_Static_Route",
                                       "nat": "NAT"},
                    "Port_Group": {"acls": "ACL"}}
    for table, column in CONTAINMENT:
        if table not in tables:
            continue
        kids = [row for t, row in candidates if t == child_tables[table][column]]
        if kids:
            for parent in tables[table].rows.values():
                for kid in kids:
                    if kid.uuid not in held and holds(parent, column, kid.uuid):
                        held[kid.uuid] = (table, parent.name, parent.uuid)
        for t, container in candidates:
            if t == table:
                strangers = sum(1 for c in getattr(container, column) if c.uuid not in index)
                if strangers:
                    foreign[container.uuid] = foreign.get(container.uuid, 0) + strangers
    return held, foreign


def observe(
    tables: Mapping[str, Any],
    owners: Collection[Owner] | None = None,
    index: OwnerIndex | None = None,
) -> list[Observed]:
    """Every kovn-owned row in `tables` (IDL tables), or only those of `owners`.

    With an `index` a scoped observe costs what the owners own, not what NB holds; without
    one (or for a full observe) every table is scanned, and the index, if any, rebuilt.
    """
    owned: Any
    if owners is not None and index is not None:
        candidates = [(t, r) for t, r in index.rows_of(tables, set(owners)) if t in ROW_CLASS]
        owned = index
        held, foreign = _scoped_parents(tables, candidates, index)
    else:
        if index is not None:
            index.rebuild(tables)
        wanted_owners = set(owners) if owners is not None else None
        owned = set()
        candidates = []
        for table in ROW_CLASS:
            if table not in tables:
                continue
            for idl_row in tables[table].rows.values():
                if row_is_owned(table, idl_row):
                    owned.add(idl_row.uuid)
                    if wanted_owners is None or owner_of(table, idl_row) in wanted_owners:
                        candidates.append((table, idl_row))
        held, foreign = _parents(tables, owned)
    result: list[Observed] = []
    for table, idl_row in candidates:
        parent_table, parent_name, parent_uuid = held.get(idl_row.uuid, ("", "", None))
        cls = ROW_CLASS[table]
        if table == "ACL":
            cls = SwitchACL if parent_table == "Logical_Switch" else ACL
        row = cls.from_db(
            _db_columns(cls, idl_row), parent_name or None, _db_references(cls, idl_row, owned)
        )
        result.append(Observed(row, idl_row.uuid, parent_uuid, foreign.get(idl_row.uuid, 0)))
    return result


# Columns only `kovn show` reads, beyond those the row types write.
SHOW_COLUMNS: dict[str, tuple[str, ...]] = {
    "Logical_Switch_Port": ("up",),
    "Logical_Router_Port": ("gateway_chassis",),
    "Gateway_Chassis": ("name", "chassis_name", "priority"),
}


def monitored_columns() -> dict[str, set[str]]:
    """The columns kovn replicates, per table: what the row types write, the containers'
    child columns, and what `show` prints. Monitoring fewer columns makes the IDL's
    per-row work (parsing, filling defaults) proportionally cheaper."""
    wanted: dict[str, set[str]] = {}
    for cls in ROW_TYPES:
        cols = wanted.setdefault(cls.TABLE, set())
        cols.update(f.column for f in field_specs(cls)
                    if f.kind in ("scalar", "optional", "set", "map", "ref"))
        if cls.HAS_EXTERNAL_IDS:
            cols.add("external_ids")
    for table, column in CONTAINMENT:
        wanted.setdefault(table, set()).add(column)
    for table, columns in SHOW_COLUMNS.items():
        wanted.setdefault(table, set()).update(columns)
    return wanted
