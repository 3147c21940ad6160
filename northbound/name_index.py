"""Rows of OVN-named tables by name, kept up to date by the IDL's notifications.

Creating a named row checks that no row of that name exists, and links resolve containers
and targets by name. Building a name -> row map of the whole table inside every transaction
cost O(table) per transaction: 59% of the controller's CPU while 5,000 Services were being
created one flush at a time (each new load balancer paid for all the others). This index
makes a lookup O(1). Like the owner index, it may hold stale entries after a reconnect (the
IDL re-reads rows without delete notices), so lookups check the row against the replica.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ovs.db import idl as ovs_idl

from northbound.owner_index import name_of


class NameIndex:
    def __init__(self, tables: Iterable[str]) -> None:
        self.tables = frozenset(tables)
        self._uuids: dict[tuple[str, str], set[Any]] = {}
        self._name: dict[Any, tuple[str, str]] = {}

    def notify(self, event: str, row: Any) -> None:
        table = row._table.name
        if table not in self.tables:
            return
        old = self._name.pop(row.uuid, None)
        if old is not None:
            uuids = self._uuids.get(old)
            if uuids is not None:
                uuids.discard(row.uuid)
                if not uuids:
                    del self._uuids[old]
        if event != ovs_idl.ROW_DELETE:
            key = (table, name_of(row))
            self._name[row.uuid] = key
            self._uuids.setdefault(key, set()).add(row.uuid)

    def lookup(self, tables: Mapping[str, Any], table: str, name: str) -> list[Any]:
        """The replica's rows of `table` named `name` (usually one)."""
        rows = (tables[table].rows.get(u) for u in self._uuids.get((table, name), ()))
        return [r for r in rows if r is not None and name_of(r) == name]
