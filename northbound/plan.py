"""The pure half of the reconciler: what must change so that NB holds the desired rows.

`plan(desired, actual)` takes the rows kovn wants and the kovn-owned rows NB has (scoped by the
caller: a pod's reconcile only observes that pod's rows) and returns creates, updates and
deletes. It never sees rows without kovn's external_ids, so it can never delete them. No IO.

What an Update carries decides what goes on the wire, so it is as small as the change:
- large set and map columns (an Address_Set of a namespace's 5,000 pod IPs, a Load_Balancer's
  vips) change by element (`Update.elements`): apply() turns them into one OVSDB mutate
  insert/delete of just the changed elements, so one pod joining costs a transaction of
  constant size (bench/nb_mutation.py, one address into a set of N: 230 bytes sent at N=100,
  1,000 and 5,000, against 69 KB for the whole-column write at N=5,000; one vip: 0.3 KB
  against 187 KB). Small columns are written whole: their few elements cost about what the
  diff does, and a whole write is exact.
- reference sets (`Update.refs`) and memberships in other owners' containers
  (`Update.joins`/`leaves`, northbound.membership) always change by element.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from northbound.rows import MAP, SET, TABLES, Membership, NbRow, ParentRef, column_kinds

ELEMENT_WRITE_MIN = 8
"""A set or map column changes by element when its new value holds at least this many
elements and the changed elements are fewer than the whole value. Below it the whole value is
at most ~100 bytes more than the diff (an address is ~14 bytes of JSON): not worth giving up
the exactness of a whole write."""


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
class SetDiff:
    """Elements to insert into and delete from a set column."""

    add: frozenset[Any]
    remove: frozenset[Any]


@dataclass(frozen=True)
class MapDiff:
    """Keys to set (new or with a changed value) and keys to delete in a map column."""

    put: Mapping[str, Any]
    remove: frozenset[str]


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
    elements: dict[str, SetDiff | MapDiff] = field(default_factory=dict)
    """Changed large set/map columns as element diffs (never also in `columns`)."""
    joins: frozenset[Membership] = frozenset()
    """Containers (member-side columns) this row must be added to."""
    leaves: frozenset[Membership] = frozenset()
    """Containers this row must be removed from; their other members stay."""


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


def element_diff(kind: str, old: Any, new: Any,
                 element_min: int | None = ELEMENT_WRITE_MIN) -> SetDiff | MapDiff | None:
    """The element diff from `old` to `new` (IDL forms) of a set or map column, or None when
    the column is better written whole: scalar, small, mostly replaced, or `element_min` None.

    Mostly replaced matters beyond size: OVSDB applies a mutate's delete before its insert and
    checks the column's size after each ("Attempted to store 0 elements in set of 1 or more",
    seen on Logical_Router_Port.networks), and a diff smaller than the new value always keeps
    an old element.
    """
    if element_min is None or kind not in (SET, MAP) or len(new) < element_min:
        return None
    if kind == SET:
        have, want = set(old), set(new)
        add, remove = frozenset(want - have), frozenset(have - want)
        return SetDiff(add, remove) if len(add) + len(remove) < len(want) else None
    put = {k: v for k, v in new.items() if k not in old or old[k] != v}
    gone = frozenset(old.keys() - new.keys())
    return MapDiff(put, gone) if len(put) + len(gone) < len(new) else None


def diff_row(old: Observed, new: NbRow,
             element_min: int | None = ELEMENT_WRITE_MIN) -> Update | None:
    """The Update turning `old` into `new`, or None when they already agree."""
    old_cols, new_cols = old.row.columns(), new.columns()
    kinds = column_kinds(type(new))
    changed: dict[str, Any] = {}
    elements: dict[str, SetDiff | MapDiff] = {}
    for col, val in new_cols.items():
        was = old_cols.get(col)
        if was == val:
            continue
        diff = element_diff(kinds.get(col, ""), was, val, element_min) if was is not None else None
        if diff is None:
            changed[col] = val
        else:
            elements[col] = diff
    refs: dict[str, tuple[str, frozenset[str], frozenset[str]]] = {}
    old_refs = old.row.references()
    for col, (table, names) in new.references().items():
        have = old_refs.get(col, (table, frozenset()))[1]
        if names != have:
            refs[col] = (table, names - have, have - names)
    old_parent, new_parent = old.row.parent(), new.parent()
    reparent = (old_parent, new_parent) if old_parent != new_parent else None
    joins = frozenset(new.member_of - old.row.member_of)
    leaves = frozenset(old.row.member_of - new.member_of)
    if not (changed or elements or refs or reparent or joins or leaves):
        return None
    return Update(old.uuid, new, changed, refs, reparent, old.parent_uuid, elements, joins,
                  leaves)


def plan(desired: Iterable[NbRow], actual: Iterable[Observed],
         element_min: int | None = ELEMENT_WRITE_MIN) -> Plan:
    """Creates, updates and deletes that turn `actual` into `desired`.

    Rows are matched by (table, key). Duplicates in `actual` (e.g. left by a crash between two
    writers) keep the first by UUID and delete the rest; duplicates in `desired` are a bug in
    the translation and raise ValueError. An unwanted row that holds rows kovn does not own
    (a hand-made port on a kovn switch) is kept, not deleted: OVSDB would take them with it.
    A deleted row leaves its containers with it (Delete.row.member_of, as observed); a kept
    row lets go of its references and memberships. `element_min` None writes every changed
    column whole (the behaviour before element diffs; benchmarks compare the two).
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
    updates = [u for ident, obs in have.items()
               if (u := diff_row(obs, wanted[ident], element_min))]
    # A kept row lets go of kovn's rows it references, so that those can still be deleted,
    # and of the containers it was in: its owner no longer declares it.
    for obs in kept:
        refs = {col: (table, frozenset(), held)
                for col, (table, held) in obs.row.references().items() if held}
        if refs or obs.row.member_of:
            updates.append(Update(obs.uuid, obs.row, {}, refs,
                                  leaves=frozenset(obs.row.member_of)))
    creates.sort(key=lambda c: _table_rank(c.row))
    updates.sort(key=lambda u: _table_rank(u.row))
    # Children (rows with a parent) go first so their containers are still alive to let go.
    deletes.sort(key=lambda d: (d.row.parent() is None, _table_rank(d.row)))
    return Plan(tuple(creates), tuple(updates), tuple(deletes), tuple(kept))
