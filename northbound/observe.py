"""Read kovn-owned rows out of the IDL replica and turn them back into typed rows.

Only rows carrying kovn's ownership keys are returned, and reference columns only list kovn
rows, so a row a person attached by hand (their own LB on a kovn switch, their own port in a
kovn port group) is invisible to the planner and survives every apply.

Each observed row also says where it is held: its parent (containment) and the containers whose
member-side columns hold it (`member_of`, northbound.membership), whoever owns the container.
Those memberships are kovn's to manage because the row is: one made by hand for a kovn row is
drift, and the next reconcile of the row's owner removes it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from northbound.owner_index import OwnerIndex, holds, name_of, owner_of
from northbound.plan import Observed
from northbound.rows import (
    ACL,
    CONTAINMENT,
    MEMBER_SIDE,
    PLAIN_KINDS,
    ROW_TYPES,
    Membership,
    NbRow,
    Owner,
    SwitchACL,
    field_specs,
)

__all__ = ["OwnerIndex", "monitored_columns", "observe", "owner_of"]

ROW_CLASS: dict[str, type[NbRow]] = {}
for _cls in ROW_TYPES:
    ROW_CLASS.setdefault(_cls.TABLE, _cls)


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
    """The plain columns in IDL form. Row.__getattr__ rebuilds a set column's datum from a
    list before converting it (ovs 3.x), 5,000 atoms re-checked per read of a large address
    set; an untouched row's datum converts directly, to the same value."""
    names = [f.column for f in field_specs(cls) if f.kind in PLAIN_KINDS]
    if cls.HAS_EXTERNAL_IDS:
        names.append("external_ids")
    data = idl_row._data
    if not data or idl_row._changes or idl_row._mutations:
        return {column: getattr(idl_row, column) for column in names}
    to_row = idl_row._uuid_to_row
    return {column: data[column].to_python(to_row) if column in data
            else getattr(idl_row, column) for column in names}


def _referenced_names(tables: Mapping[str, Any], target: str, idl_row: Any, column: str,
                      owned: Any) -> frozenset[str]:
    """Names of the kovn rows in reference column `column`, read off the replica's datum.

    `getattr(idl_row, column)` would sort the column's Row objects and then fetch each name
    through Row.__getattr__: with a 5,000-port group that made most of the ~90 ms each
    reconcile of the policy took, ~30 ms this way (bench/nb_mutation.py, 2 cores).
    """
    datum = idl_row._data.get(column) if idl_row._data else None
    rows = tables[target].rows if target in tables else None
    if datum is None or rows is None or idl_row._changes or idl_row._mutations:
        return frozenset(t.name for t in getattr(idl_row, column) if t.uuid in owned)
    found = []
    for atom in datum.values:
        if atom.value in owned and (ref := rows.get(atom.value)) is not None:
            found.append(name_of(ref))
    return frozenset(found)


def _db_references(tables: Mapping[str, Any], cls: type[NbRow], idl_row: Any,
                   owned: Any) -> dict[str, frozenset[str]]:
    return {f.column: _referenced_names(tables, f.table, idl_row, f.column, owned)
            for f in field_specs(cls) if f.kind == "ref"}


def _scoped_parents(
    tables: Mapping[str, Any], candidates: list[tuple[str, Any]], index: OwnerIndex
) -> tuple[dict[Any, tuple[str, str, Any]], dict[Any, int]]:
    """_parents() for just the candidate rows. Per container the cheaper of two walks (as
    _memberships does): a set lookup per candidate child, or a pass over the container's
    children, so a flush of 4,000 ACLs over 3,000 port groups costs ~their 6,000 children,
    not 12 million lookups, and one pod's flush costs a lookup per container."""
    held: dict[Any, tuple[str, str, Any]] = {}
    foreign: dict[Any, int] = {}
    for (table, column), child_table in CONTAINMENT.items():
        if table not in tables:
            continue
        kids = {row.uuid for t, row in candidates if t == child_table}
        if kids:
            for parent in tables[table].rows.values():
                for uuid in _inside(parent, column, kids):
                    held.setdefault(uuid, (table, parent.name, parent.uuid))
        for t, container in candidates:
            if t == table:
                strangers = sum(1 for c in getattr(container, column) if c.uuid not in index)
                if strangers:
                    foreign[container.uuid] = foreign.get(container.uuid, 0) + strangers
    return held, foreign


def _inside(container: Any, column: str, kids: set[Any]) -> list[Any]:
    """Which of `kids` (uuids) the container's `column` holds, by the cheaper walk: a set
    lookup per kid, or a pass over the column's elements."""
    datum = container._data.get(column) if container._data else None
    if datum is None or not datum.values:
        return []
    if len(kids) < len(datum.values):
        return [uuid for uuid in kids if holds(container, column, uuid)]
    return [atom.value for atom in datum.values if atom.value in kids]


def _memberships(
    tables: Mapping[str, Any], candidates: list[tuple[str, Any]]
) -> dict[Any, set[Membership]]:
    """member uuid -> the containers (member-side columns) holding it, for the candidates.

    Per container the cheaper of two walks: a set lookup per candidate, or a pass over the
    container's members. So a scoped observe costs O(candidates x containers of that table)
    at most, and a full one O(memberships in NB): never a scan of every member in NB for one
    Service's load balancer.
    """
    found: dict[Any, set[Membership]] = {}
    for (table, column), member_table in MEMBER_SIDE.items():
        if table not in tables:
            continue
        kids = {row.uuid for t, row in candidates if t == member_table}
        if not kids:
            continue
        for container in tables[table].rows.values():
            for uuid in _inside(container, column, kids):
                found.setdefault(uuid, set()).add(Membership(table, container.name, column))
    return found


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
                row_owner = owner_of(table, idl_row)
                if row_owner is not None:
                    owned.add(idl_row.uuid)
                    if wanted_owners is None or row_owner in wanted_owners:
                        candidates.append((table, idl_row))
        held, foreign = _parents(tables, owned)
    member_of = _memberships(tables, candidates)
    result: list[Observed] = []
    for table, idl_row in candidates:
        parent_table, parent_name, parent_uuid = held.get(idl_row.uuid, ("", "", None))
        cls = ROW_CLASS[table]
        if table == "ACL":
            cls = SwitchACL if parent_table == "Logical_Switch" else ACL
        row = cls.from_db(_db_columns(cls, idl_row), parent_name or None,
                          _db_references(tables, cls, idl_row, owned),
                          frozenset(member_of.get(idl_row.uuid, ())))
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
    child and member-side columns, and what `show` prints. Monitoring fewer columns makes the
    IDL's per-row work (parsing, filling defaults) proportionally cheaper."""
    wanted: dict[str, set[str]] = {}
    for cls in ROW_TYPES:
        cols = wanted.setdefault(cls.TABLE, set())
        cols.update(f.column for f in field_specs(cls) if f.kind in (*PLAIN_KINDS, "ref"))
        if cls.HAS_EXTERNAL_IDS:
            cols.add("external_ids")
    for table, column in (*CONTAINMENT, *MEMBER_SIDE):
        wanted.setdefault(table, set()).add(column)
    for table, columns in SHOW_COLUMNS.items():
        wanted.setdefault(table, set()).update(columns)
    return wanted
