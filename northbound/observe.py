"""Read kovn-owned rows out of the IDL replica and turn them back into typed rows.

Only rows carrying kovn's ownership keys are returned, and reference columns only list kovn
rows, so a row a person attached by hand (their own LB on a kovn switch, their own port in a
kovn port group) is invisible to the planner and survives every apply.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from northbound import names
from northbound.plan import Observed
from northbound.rows import (
    ACL,
    ROW_TYPES,
    NbRow,
    Owner,
    SwitchACL,
)

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


def row_is_owned(table: str, idl_row: Any) -> bool:
    if table == "Load_Balancer_Group":
        return idl_row.name in names.OWNED_LB_GROUPS
    return names.is_owned(idl_row.external_ids)


def owner_of(table: str, idl_row: Any) -> Owner | None:
    """The Kubernetes owner of a row, or None when the row is not kovn's."""
    if not row_is_owned(table, idl_row):
        return None
    if table == "Load_Balancer_Group":
        return Owner(names.OwnerType.CLUSTER, names.CLUSTER_OWNER)
    ids = idl_row.external_ids
    return Owner(ids[names.OWNER_TYPE_KEY], ids[names.OWNER_KEY])


def _parents(tables: Mapping[str, Any]) -> dict[Any, tuple[str, str, Any]]:
    """child uuid -> (parent table, parent name, parent uuid)."""
    held: dict[Any, tuple[str, str, Any]] = {}
    for table, column in CONTAINMENT:
        if table not in tables:
            continue
        for parent in tables[table].rows.values():
            for child in getattr(parent, column):
                held[child.uuid] = (table, parent.name, parent.uuid)
    return held


def _db_columns(cls: type[NbRow], idl_row: Any) -> dict[str, Any]:
    probe = cls.__dataclass_fields__
    cols: dict[str, Any] = {}
    for f in probe.values():
        if f.metadata.get("kind") in ("scalar", "optional", "set", "map"):
            col = f.metadata["column"] or f.name
            cols[col] = getattr(idl_row, col)
    if cls.HAS_EXTERNAL_IDS:
        cols["external_ids"] = idl_row.external_ids
    return cols


def _db_references(cls: type[NbRow], idl_row: Any, owned: set[Any]) -> dict[str, frozenset[str]]:
    refs: dict[str, frozenset[str]] = {}
    for f in cls.__dataclass_fields__.values():
        if f.metadata.get("kind") == "ref":
            col = f.metadata["column"]
            refs[col] = frozenset(t.name for t in getattr(idl_row, col) if t.uuid in owned)
    return refs


def observe(
    tables: Mapping[str, Any], owners: Collection[Owner] | None = None
) -> list[Observed]:
    """Every kovn-owned row in `tables` (IDL tables), or only those of `owners`."""
    wanted_owners = set(owners) if owners is not None else None
    owned: set[Any] = set()
    candidates: list[tuple[str, Any]] = []
    for table in ROW_CLASS:
        if table not in tables:
            continue
        for idl_row in tables[table].rows.values():
            if row_is_owned(table, idl_row):
                owned.add(idl_row.uuid)
                candidates.append((table, idl_row))
    held = _parents(tables)
    result: list[Observed] = []
    for table, idl_row in candidates:
        if wanted_owners is not None and owner_of(table, idl_row) not in wanted_owners:
            continue
        parent_table, parent_name, parent_uuid = held.get(idl_row.uuid, ("", "", None))
        cls = ROW_CLASS[table]
        if table == "ACL":
            cls = SwitchACL if parent_table == "Logical_Switch" else ACL
        row = cls.from_db(
            _db_columns(cls, idl_row), parent_name or None, _db_references(cls, idl_row, owned)
        )
        result.append(Observed(row, idl_row.uuid, parent_uuid))
    return result
