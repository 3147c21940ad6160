"""The IO half of the reconciler: turn a Plan into one OVSDB transaction.

Everything happens inside one ovsdbapp command, in the connection thread: observing the
replica, planning and writing see one consistent snapshot, and when the server answers
TRY_AGAIN ovsdbapp re-runs the command against the fresh replica, so the plan is recomputed
rather than replayed stale. Containers, reference sets, memberships and large set/map columns
are changed with mutations (add/remove one element): the python IDL turns Row.addvalue/
delvalue and setkey/delkey into one OVSDB "mutate" operation per row, deletes before inserts
(ovs/db/idl.py, Transaction.commit), and setkey deletes the key it sets first (whether the row
has it or not), so a changed map value is "delete k, insert k=v": OVSDB's map insert alone
never overwrites a key. Rows and elements kovn does not own, held in the same column, stay;
so do elements another writer adds concurrently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ovsdbapp.backend.ovs_idl import command

from northbound import names
from northbound.name_index import NameIndex
from northbound.owner_index import name_of
from northbound.plan import MapDiff, Plan, SetDiff, Update
from northbound.rows import Membership, NbRow


class ConflictError(RuntimeError):
    """A row kovn wants to create already exists but is not kovn's."""


def _clash_message(row: NbRow, name: str, clash: Any) -> str:
    ids = getattr(clash, "external_ids", {}) or {}
    if names.is_owned(ids):
        holder = f"{ids[names.OWNER_TYPE_KEY]} {ids[names.OWNER_KEY]}"
        return (f"{row.TABLE} {name!r} already exists and belongs to {holder}, not to "
                f"{row.owner}: two objects claim one name; rename or delete one of them")
    return (f"{row.TABLE} {name!r} already exists and is not kovn's (no kovn.io/owner "
            "external_ids): delete or rename it; kovn does not adopt rows")


class _Resolver:
    """Finds rows by name: rows created in this transaction first, then the replica."""

    def __init__(self, tables: dict[str, Any], doomed: set[Any],
                 name_index: NameIndex | None = None) -> None:
        self._tables = tables
        self._doomed = doomed
        self._name_index = name_index
        """UUIDs this transaction deletes: never found, even when indexed before their delete."""
        self._by_name: dict[str, dict[str, Any]] = {}
        self.created: dict[tuple[str, str], Any] = {}
        self.deleted: dict[tuple[str, str], Any] = {}
        """Named rows deleted earlier in this transaction (gone from the replica's tables)."""

    def existing(self, table: str, name: str) -> Any:
        if self._name_index is not None and table in self._name_index.tables:
            rows = [r for r in self._name_index.lookup(self._tables, table, name)
                    if r.uuid not in self._doomed]
            return rows[0] if rows else None
        index = self._by_name.get(table)
        if index is None:
            index = {name_of(r): r for r in self._tables[table].rows.values()}
            self._by_name[table] = index
        row = index.get(name)
        return None if row is None or row.uuid in self._doomed else row

    def find(self, table: str, name: str) -> Any:
        row = self.created.get((table, name))
        return row if row is not None else self.existing(table, name)

    def require(self, table: str, name: str, needed_by: NbRow) -> Any:
        row = self.find(table, name)
        if row is None:
            raise LookupError(
                f"{needed_by.TABLE} {needed_by.key!r} needs {table} {name!r}, which does not "
                "exist: create it first (or in the same reconcile)"
            )
        return row


def _leave(resolve: _Resolver, idl_row: Any, m: Membership) -> None:
    """Take `idl_row` out of container `m` (unless the container goes in this transaction)."""
    holder = resolve.find(m.table, m.name)
    if holder is not None:
        holder.delvalue(m.column, idl_row)


def _write_elements(idl_row: Any, op: Update) -> None:
    for column, diff in op.elements.items():
        if isinstance(diff, SetDiff):
            for value in diff.remove:
                idl_row.delvalue(column, value)
            for value in diff.add:
                idl_row.addvalue(column, value)
        elif isinstance(diff, MapDiff):
            for key in diff.remove:
                idl_row.delkey(column, key)
            for key, value in diff.put.items():
                idl_row.setkey(column, key, value)


def write_plan(txn: Any, tables: dict[str, Any], plan: Plan,
               name_index: NameIndex | None = None) -> None:
    """Add every operation of `plan` to the IDL transaction `txn`."""
    resolve = _Resolver(tables, {op.uuid for op in plan.deletes}, name_index)
    deleted: set[Any] = set()
    for op in plan.deletes:
        idl_row = tables[op.row.TABLE].rows.get(op.uuid)
        if idl_row is None:
            continue
        # Leave explicitly: today's member-side columns are weak references, which OVSDB
        # drops by itself (also when the same transaction mutates the container: checked on
        # 3.1), but a strong one would make the delete fail.
        for membership in sorted(op.row.member_of):
            _leave(resolve, idl_row, membership)
        parent_ref = op.row.parent()
        if parent_ref and op.parent_uuid is not None and op.parent_uuid not in deleted:
            holder = tables[parent_ref.table].rows.get(op.parent_uuid)
            if holder is not None:
                holder.delvalue(parent_ref.column, idl_row)
        if op.row.NAMED:
            resolve.deleted[(op.row.TABLE, op.row.key)] = idl_row
        idl_row.delete()
        deleted.add(op.uuid)

    inserted: list[tuple[NbRow, Any]] = []
    for op in plan.creates:
        row, columns = op.row, op.row.columns()
        name = columns["name"] if row.NAMED else None
        if name is not None:
            clash = resolve.existing(row.TABLE, name)
            if clash is not None and clash.uuid not in deleted:
                raise ConflictError(_clash_message(row, name, clash))
        idl_row = txn.insert(tables[row.TABLE])
        for column, value in columns.items():
            setattr(idl_row, column, value)
        if name is not None:
            resolve.created[(row.TABLE, name)] = idl_row
        inserted.append((row, idl_row))
    # Link only once every new row exists, so creates may come in any order. A new container
    # gets its new children in one write: the IDL fills a fresh row's column that needs at
    # least one element (Meter.bands) with a placeholder, which an added value would keep.
    new_rows = {id(idl_row) for _, idl_row in inserted}
    fresh_children: dict[tuple[int, str], tuple[Any, list[Any]]] = {}
    for row, idl_row in inserted:
        parent_ref = row.parent()
        if parent_ref:
            holder = resolve.require(parent_ref.table, parent_ref.name, row)
            if id(holder) in new_rows:
                fresh_children.setdefault((id(holder), parent_ref.column),
                                          (holder, []))[1].append(idl_row)
            else:
                holder.addvalue(parent_ref.column, idl_row)
        for column, (target, targets) in row.references().items():
            if targets:
                setattr(idl_row, column,
                        [resolve.require(target, n, row) for n in sorted(targets)])
        for m in sorted(row.member_of):
            resolve.require(m.table, m.name, row).addvalue(m.column, idl_row)
    for (_, column), (holder, children) in fresh_children.items():
        setattr(holder, column, children)

    for op in plan.updates:
        idl_row = tables[op.row.TABLE].rows[op.uuid]
        for column, value in op.columns.items():
            setattr(idl_row, column, value)
        _write_elements(idl_row, op)
        for m in sorted(op.leaves):
            _leave(resolve, idl_row, m)
        for m in sorted(op.joins):
            resolve.require(m.table, m.name, op.row).addvalue(m.column, idl_row)
        for column, (target, add, remove) in op.refs.items():
            for name in sorted(remove):
                # Also let go of rows deleted above: ovsdb-server (3.1) keeps a weak reference
                # to a row deleted in the same transaction as a change to the referring row.
                gone = resolve.find(target, name)
                if gone is None:
                    gone = resolve.deleted.get((target, name))
                if gone is not None:
                    idl_row.delvalue(column, gone)
            for name in sorted(add):
                idl_row.addvalue(column, resolve.require(target, name, op.row))
        if op.reparent:
            old, new = op.reparent
            if old is not None and op.old_parent_uuid is not None:
                holder = tables[old.table].rows.get(op.old_parent_uuid)
                if holder is not None:
                    holder.delvalue(old.column, idl_row)
            if new is not None:
                resolve.require(new.table, new.name, op.row).addvalue(new.column, idl_row)


class PlanCommand(command.BaseCommand):
    """Runs `make_plan(tables)` in the connection thread and writes the result; the plan
    itself is the command's result."""

    def __init__(self, api: Any, make_plan: Callable[[dict[str, Any]], Plan],
                 name_index: NameIndex | None = None) -> None:
        super().__init__(api)
        self._make_plan = make_plan
        self._name_index = name_index

    def run_idl(self, txn: Any) -> None:
        plan = self._make_plan(self.api.tables)
        write_plan(txn, self.api.tables, plan, self._name_index)
        self.result = plan

