"""The pure half of the reconciler: what must change so that NB holds the desired rows.

`plan(desired, actual)` takes the rows kovn wants and the kovn-owned rows NB has (scoped by the
caller: a pod's reconcile only observes that pod's rows) and returns creates, updates and
deletes. It never sees rows without kovn's external_ids, so it can never delete them. No IO.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from northbound.rows import TABLES, NbRow, ParentRef


@dataclass(frozen=True)
class Observed:
    """A kovn-owned row as NB holds it, with the handles apply() needs to change it."""

    row: NbRow
    uuid: Any
    parent_uuid: Any = None
    foreign_children: int = 0
    """Rows without kovn's external_ids that this row holds (ports, ACLs... made by hand).
    OVSDB would delete them with it, so kovn keeps such a row instead of deleting it."""


@dataclass(frozen=True)
class Create:
    row: NbRow


@dataclass(frozen=True)
class Update:
    uuid: Any
    row: NbRow
    columns: dict[str, Any]
    """Changed plain columns with their complete new value (maps are replaced, not merged)."""
    refs: dict[str, tuple[str, frozenset[str], frozenset[str]]] = field(default_factory=dict)
    """column -> (target table, names to add, names to remove)."""
    reparent: tuple[ParentRef, ParentRef] | None = None
    """(old, new) container when a child row moves, e.g. a port to another switch."""
    old_parent_uuid: Any = None


@dataclass(frozen=True)
class Delete:
    uuid: Any
    row: NbRow
    parent_uuid: Any = None


@dataclass(frozen=True)
class Plan:
    creates: tuple[Create, ...] = ()
    updates: tuple[Update, ...] = ()
    deletes: tuple[Delete, ...] = ()
    kept: tuple[Observed, ...] = ()
    """Unwanted kovn rows left in place because deleting them would delete hand-made rows
    they hold. Not changes: a plan with only `kept` rows is empty."""

    def __bool__(self) -> bool:
        return bool(self.creates or self.updates or self.deletes)

    def summary(self) -> str:
        c, u, d = len(self.creates), len(self.updates), len(self.deletes)
        kept = f", {len(self.kept)} kept (hold hand-made rows)" if self.kept else ""
        return f"{c} creates, {u} updates, {d} deletes{kept}"


def _table_rank(row: NbRow) -> tuple[int, str]:
    return (TABLES.index(row.TABLE), row.key)


def diff_row(old: Observed, new: NbRow) -> Update | None:
    """The Update turning `old` into `new`, or None when they already agree."""
    old_cols, new_cols = old.row.columns(), new.columns()
    changed = {col: val for col, val in new_cols.items() if old_cols.get(col) != val}
    refs: dict[str, tuple[str, frozenset[str], frozenset[str]]] = {}
    old_refs = old.row.references()
    for col, (table, names) in new.references().items():
        have = old_refs.get(col, (table, frozenset()))[1]
        if names != have:
            refs[col] = (table, names - have, have - names)
    old_parent, new_parent = old.row.parent(), new.parent()
    reparent = (old_parent, new_parent) if old_parent != new_parent else None
    if not (changed or refs or reparent):
        return None
    return Update(old.uuid, new, changed, refs, reparent, old.parent_uuid)


def plan(desired: Iterable[NbRow], actual: Iterable[Observed]) -> Plan:
    """Creates, updates and deletes that turn `actual` into `desired`.

    Rows are matched by (table, key). Duplicates in `actual` (e.g. left by a crash between two
    writers) keep the first by UUID and delete the rest; duplicates in `desired` are a bug in
    the translation and raise ValueError. An unwanted row that holds rows kovn does not own
    (a hand-made port on a kovn switch) is kept, not deleted: OVSDB would take them with it.
    """
    wanted: dict[tuple[str, str], NbRow] = {}
    for row in desired:
        if row.ident in wanted and wanted[row.ident] != row:
            raise ValueError(f"two different desired rows share {row.TABLE} key {row.key!r}")
        wanted[row.ident] = row

    have: dict[tuple[str, str], Observed] = {}
    deletes: list[Delete] = []
    kept: list[Observed] = []
    for obs in sorted(actual, key=lambda o: str(o.uuid)):
        ident = obs.row.ident
        if ident in have or ident not in wanted:
            if obs.foreign_children:
                kept.append(obs)
            else:
                deletes.append(Delete(obs.uuid, obs.row, obs.parent_uuid))
        else:
            have[ident] = obs

    creates = [Create(row) for ident, row in wanted.items() if ident not in have]
    updates = [u for ident, obs in have.items() if (u := diff_row(obs, wanted[ident]))]
    # A kept row lets go of kovn's rows it references, so that those can still be deleted.
    updates += [
        Update(obs.uuid, obs.row, {}, refs)
        for obs in kept
        if (refs := {col: (table, frozenset(), held)
                     for col, (table, held) in obs.row.references().items() if held})
    ]
    creates.sort(key=lambda c: _table_rank(c.row))
    updates.sort(key=lambda u: _table_rank(u.row))
    # Children (rows with a parent) go first so their containers are still alive to let go.
    deletes.sort(key=lambda d: (d.row.parent() is None, _table_rank(d.row)))
    return Plan(tuple(creates), tuple(updates), tuple(deletes), tuple(kept))
