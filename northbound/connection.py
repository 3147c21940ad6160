"""A connection to the OVN northbound database through ovsdbapp.

The python IDL keeps an in-memory replica of the tables kovn manages and reconnects by itself
(with backoff) when ovsdb-server restarts; transactions issued while it is away are retried
until the timeout. What this module adds: a clear error when NB cannot be reached at all, a
fresh ovsdbapp API class per connection (ovsdbapp stores the connection on the class, so two
connections in one process would otherwise share one), and check_error=True everywhere.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from ovs.db import idl as ovs_idl
from ovsdbapp import exceptions as ovsdbapp_exceptions
from ovsdbapp.backend.ovs_idl import command as ovsdbapp_command
from ovsdbapp.backend.ovs_idl import connection as ovsdbapp_connection
from ovsdbapp.backend.ovs_idl import idlutils
from ovsdbapp.schema.ovn_northbound import impl_idl

from northbound import fastjson
from northbound.name_index import NameIndex
from northbound.observe import monitored_columns
from northbound.owner_index import OwnerIndex
from northbound.rows import NAMED_TABLES, TABLES

LOG = logging.getLogger(__name__)
fastjson.enable()
SCHEMA = "OVN_Northbound"
DEFAULT_NB = "unix:/tmp/kovn-sandbox/nb.sock"
# Tables kovn reads besides the ones it writes (show prints the gateway chassis of ports).
EXTRA_TABLES = ("Gateway_Chassis",)


class NorthboundUnavailable(RuntimeError):
    """NB could not be reached; the message says where we looked and what to check."""


class NorthboundError(RuntimeError):
    """NB refused a transaction (constraint violation, conflict with a row kovn does not own)."""


def _unreachable(remote: str, detail: object) -> NorthboundUnavailable:
    return NorthboundUnavailable(
        f"cannot reach the OVN northbound database at {remote}: {detail}. "
        "Is ovsdb-server running there? Start the sandbox with `kovn sandbox up`, "
        "or pass the right address with --nb (e.g. unix:/run/ovn/ovnnb_db.sock or "
        "tcp:127.0.0.1:6641)."
    )


def _fetch_schema(remote: str, timeout: float) -> Any:
    """idlutils.get_schema_helper with a deadline: by itself it blocks forever on a server
    that accepts the connection but never answers (stopped, hung)."""
    outcome: dict[str, Any] = {}

    def fetch() -> None:
        try:
            outcome["helper"] = idlutils.get_schema_helper(remote, SCHEMA)
        except Exception as exc:  # ovsdbapp raises a bare Exception here
            outcome["error"] = exc

    worker = threading.Thread(target=fetch, name="kovn-nb-schema", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise _unreachable(remote, f"no answer within {timeout}s")
    if "error" in outcome:
        raise _unreachable(remote, outcome["error"]) from outcome["error"]
    return outcome["helper"]


class _IndexedIdl(ovsdbapp_connection.OvsdbIdl):
    """The IDL, telling the owner index about every row it creates, changes or deletes."""

    def __init__(self, owner_index: OwnerIndex, name_index: NameIndex, *args: Any,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner_index = owner_index
        self._name_index = name_index

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        self._owner_index.notify(event, row)
        self._name_index.notify(event, row)
        super().notify(event, row, updates)


class NbConnection:
    """Owns one IDL connection to NB and the ovsdbapp API object bound to it."""

    def __init__(
        self, remote: str = DEFAULT_NB, timeout: float = 30.0, tables: Iterable[str] | None = None
    ) -> None:
        self.remote = remote
        self.timeout = timeout
        self._tables = tuple(tables) if tables is not None else TABLES + EXTRA_TABLES
        self.api: Any = None
        self.owner_index = OwnerIndex()
        self.name_index = NameIndex(NAMED_TABLES)

    def start(self) -> NbConnection:
        helper = _fetch_schema(self.remote, self.timeout)
        columns = monitored_columns()
        for table in self._tables:
            if table in columns:
                helper.register_columns(table, sorted(columns[table]))
            else:
                helper.register_table(table)
        idl = _IndexedIdl(self.owner_index, self.name_index, self.remote, helper,
                          leader_only=False)
        conn = ovsdbapp_connection.Connection(idl, timeout=self.timeout)
        # A subclass per connection: ovsdbapp keeps the connection in a class attribute.
        api_class = type("KovnNbApi", (impl_idl.OvnNbApiIdlImpl,), {"_ovsdb_connection": None})
        try:
            # No ovsdbapp name indexes: kovn resolves names itself, and each index costs a
            # sorted-list insert per row on every update of a 10,000-port table.
            self.api = api_class(conn, auto_index=False)
        except ovsdbapp_exceptions.TimeoutException as exc:
            conn.stop(timeout=1)
            raise _unreachable(self.remote, f"no answer within {self.timeout}s") from exc
        LOG.debug("connected to NB at %s", self.remote)
        return self

    def __enter__(self) -> NbConnection:
        return self.start() if self.api is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def idl(self) -> ovs_idl.Idl:
        return self.api.idl

    @property
    def tables(self) -> dict[str, Any]:
        return self.api.tables

    def execute(self, command: ovsdbapp_command.BaseCommand) -> Any:
        """Run one command in its own transaction; errors raise NorthboundError."""
        try:
            with self.api.transaction(check_error=True, log_errors=False) as txn:
                txn.add(command)
        except ovsdbapp_exceptions.TimeoutException as exc:
            raise _unreachable(self.remote, "transaction timed out") from exc
        except (RuntimeError, LookupError) as exc:  # LookupError: a row names a missing one
            raise NorthboundError(f"NB at {self.remote} refused the transaction: {exc}") from exc
        return command.result

    def close(self) -> None:
        if self.api is not None:
            self.api.ovsdb_connection.stop(timeout=5)
            self.api = None
