"""A connection to the OVN northbound database through ovsdbapp.

The python IDL keeps an in-memory replica of the tables kovn manages and reconnects by itself
(with backoff) when ovsdb-server restarts; transactions issued while it is away are retried
until the timeout. What this module adds: a clear error when NB cannot be reached at all, a
fresh ovsdbapp API class per connection (ovsdbapp stores the connection on the class, so two
connections in one process would otherwise share one), and check_error=True everywhere.

A clustered NB (raft, three ovsdb-servers) is one remote list, `unix:/a.sock,unix:/b.sock,...`
or `tcp:10.0.0.1:6641,tcp:10.0.0.2:6641,...`. The IDL talks to the leader only
(`leader_only`): it tries the members in turn and skips followers, so kovn's replica always
holds what was committed and a transaction is never planned against a follower lagging
behind. When the leader dies, the IDL marks the transactions in flight TRY_AGAIN, which
ovsdbapp re-runs once the replica is back in sync with the new leader: the plan is recomputed
(northbound/apply.py), not replayed. A transaction whose commit the dead leader may or may
not have made before dying can then collide with its own first attempt (a port name NB
already holds); execute() runs such a transaction once more after a failover, against the
replica that now shows the outcome. Every change of server is logged (see _FailoverLog).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

import ovs.jsonrpc as ovs_jsonrpc
import ovs.stream as ovs_stream
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
from northbound.remotes import split_remotes
from northbound.rows import NAMED_TABLES, TABLES

LOG = logging.getLogger(__name__)
fastjson.enable()
SCHEMA = "OVN_Northbound"
DEFAULT_NB = "unix:/tmp/kovn-sandbox/nb.sock"
# How often execute() runs a transaction again that NB refused across a failover.
FAILOVER_RETRIES = 2
# With several remotes (a cluster), retry the members every second (the IDL's floor).
MEMBER_BACKOFF_MS = 1000
# Tables kovn reads besides the ones it writes (show prints the gateway chassis of ports).
EXTRA_TABLES = ("Gateway_Chassis",)


class NorthboundUnavailable(RuntimeError):
    """NB could not be reached; the message says where we looked and what to check."""


class NorthboundError(RuntimeError):
    """NB refused a transaction (constraint violation, conflict with a row kovn does not own)."""


def _unreachable(remote: str, detail: object) -> NorthboundUnavailable:
    cluster = (" A raft cluster needs a majority of its members running to elect a leader "
               "(2 of 3): `ovs-appctl -t <member ctl> cluster/status OVN_Northbound` says "
               "what each one sees." if len(split_remotes(remote)) > 1 else "")
    return NorthboundUnavailable(
        f"cannot reach the OVN northbound database at {remote}: {detail}. "
        "Is ovsdb-server running there? Start the sandbox with `kovn sandbox up`, "
        "or pass the right address with --nb (e.g. unix:/run/ovn/ovnnb_db.sock or "
        f"tcp:127.0.0.1:6641).{cluster}"
    )


def _fetch_schema(remote: str, timeout: float) -> Any:
    """The NB schema from the first member of `remote` that answers, within `timeout`.

    Each member gets an equal share of what is left of the deadline, so a stopped (hung)
    member of a cluster costs its share and no more; a member that is down is the normal
    state of a cluster with a failure, logged at INFO, not an error."""
    members = split_remotes(remote) or [remote]
    deadline = time.monotonic() + timeout
    failures = []
    for i, member in enumerate(members):
        share = max(0.1, (deadline - time.monotonic()) / (len(members) - i))
        try:
            return _fetch_schema_from(member, share)
        except (OSError, RuntimeError) as exc:
            failures.append(f"{member}: {exc}" if len(members) > 1 else str(exc))
            if i + 1 < len(members):
                LOG.info("NB member %s gave no schema (%s); trying the next one", member, exc)
    raise _unreachable(remote, "; ".join(failures))


def _fetch_schema_from(member: str, timeout: float) -> Any:
    """get_schema from one server, with a deadline: by itself the jsonrpc call blocks
    forever on a server that accepts the connection but never answers (stopped, hung)."""
    outcome: dict[str, Any] = {}

    def fetch() -> None:
        try:
            error, conn = ovs_stream.Stream.open_block(ovs_stream.Stream.open(member))
            if error:
                raise OSError(error, os.strerror(error))
            rpc = ovs_jsonrpc.Connection(conn)
            try:
                error, reply = rpc.transact_block(
                    ovs_jsonrpc.Message.create_request("get_schema", [SCHEMA]))
            finally:
                rpc.close()
            if error:
                raise OSError(error, os.strerror(error))
            if reply.error:
                raise RuntimeError(f"no {SCHEMA} database there ({reply.error})")
            outcome["helper"] = idlutils.create_schema_helper(reply.result)
        except Exception as exc:  # any failure of this member: the caller tries the next
            outcome["error"] = exc

    worker = threading.Thread(target=fetch, name="kovn-nb-schema", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise OSError(f"no answer within {timeout:.1f}s")
    if "error" in outcome:
        error = outcome["error"]
        raise error if isinstance(error, OSError | RuntimeError) else RuntimeError(str(error))
    return outcome["helper"]


class _FailoverLog:
    """Says when the IDL loses its server and which member it writes through afterwards.

    Watched from Idl.run() in the connection thread: the session's seqno changes on every
    connect and disconnect, and the IDL is back in business once it monitors again (for a
    cluster with leader_only: once it found the leader, skipping the followers)."""

    def __init__(self, remote: str, leader_only: bool) -> None:
        self.remote = remote
        self.several = len(split_remotes(remote)) > 1
        self._what = " (the raft leader)" if self.several and leader_only else ""
        self.failovers = 0
        """How often the connection lost its server (a raft failover, a restart); counted
        when lost, so a transaction failing on the way sees it."""
        self._seqno: int | None = None
        self._serving: str | None = None  # the server the replica was last in sync with
        self._synced = False
        self._lost_at: float | None = None

    def observe(self, idl: ovs_idl.Idl) -> None:
        session = idl._session
        seqno = session.get_seqno()
        if seqno != self._seqno:  # a new session, or the end of one: in sync no more
            self._seqno = seqno
            if self._synced:
                self._synced, self._lost_at = False, time.monotonic()
                self.failovers += 1
                LOG.warning("NB: lost %s%s; transactions in flight wait and are retried",
                            self._serving, f", trying the other members of {self.remote}"
                            if self.several else ", reconnecting")
        if not self._synced and session.is_connected() and \
                idl.state == ovs_idl.Idl.IDL_S_MONITORING:
            self._synced = True
            self._settled(session.get_name())

    def _settled(self, name: str) -> None:
        if self._lost_at is None:
            LOG.debug("NB: connected to %s%s", name, self._what)
        else:
            LOG.warning("NB failover: now on %s%s after %.1fs without NB (was %s); the "
                        "transactions in flight are retried", name, self._what,
                        time.monotonic() - self._lost_at, self._serving)
        self._serving, self._lost_at = name, None


class _IndexedIdl(ovsdbapp_connection.OvsdbIdl):
    """The IDL, telling the owner index about every row it creates, changes or deletes."""

    def __init__(self, owner_index: OwnerIndex, name_index: NameIndex, remote: str,
                 *args: Any, leader_only: bool = True, **kwargs: Any) -> None:
        super().__init__(remote, *args, leader_only=leader_only, **kwargs)
        if len(split_remotes(remote)) > 1:
            # Once every member was tried, the IDL waits up to 8 s (doubling from 1 s) before
            # trying again: a failover would outlast the election (~1-2 s) by seconds.
            self._session.reconnect.set_backoff(MEMBER_BACKOFF_MS, MEMBER_BACKOFF_MS)
        self._owner_index = owner_index
        self._name_index = name_index
        self.failover_log = _FailoverLog(remote, leader_only)

    def run(self) -> Any:
        changed = super().run()
        self.failover_log.observe(self)
        return changed

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        self._owner_index.notify(event, row)
        self._name_index.notify(event, row)
        super().notify(event, row, updates)


class NbConnection:
    """Owns one IDL connection to NB and the ovsdbapp API object bound to it.

    `remote` may list several servers (the members of a raft cluster), comma-separated.
    `leader_only` (the default, for writers): stay on the cluster's leader. Readers that only
    take one snapshot (`kovn show`) may pass False and read any member."""

    def __init__(
        self, remote: str = DEFAULT_NB, timeout: float = 30.0, tables: Iterable[str] | None = None,
        leader_only: bool = True,
    ) -> None:
        self.remote = remote
        self.timeout = timeout
        self.leader_only = leader_only
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
                          leader_only=self.leader_only)
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

    @property
    def failovers(self) -> int:
        """How often the connection lost its server (the raft leader died or stepped down,
        ovsdb-server restarted); the IDL then finds another by itself."""
        return self.idl.failover_log.failovers if self.api is not None else 0

    def execute(self, command: ovsdbapp_command.BaseCommand) -> Any:
        """Run one command in its own transaction; errors raise NorthboundError.

        A transaction refused while the connection failed over is run again (at most
        FAILOVER_RETRIES times): its first attempt may have been committed by the server
        that went away, and the fresh replica then shows it, so the command recomputes a
        write that no longer collides (PlanCommand plans again from the replica)."""
        for attempt in range(FAILOVER_RETRIES + 1):
            failovers = self.failovers
            try:
                with self.api.transaction(check_error=True, log_errors=False) as txn:
                    txn.add(command)
            except ovsdbapp_exceptions.TimeoutException as exc:
                raise _unreachable(self.remote, "transaction timed out") from exc
            except (RuntimeError, LookupError) as exc:  # LookupError: a row names a missing one
                if str(exc) == "OVS transaction timed out":  # TRY_AGAIN until the deadline
                    raise _unreachable(self.remote, f"no server took the transaction within "
                                       f"{self.timeout}s (a raft cluster without a leader, "
                                       "or a server that went away)") from exc
                if self.failovers != failovers and attempt < FAILOVER_RETRIES:
                    LOG.warning("NB refused a transaction sent across a failover (%s); "
                                "running it again against the new server's data", exc)
                    continue
                raise NorthboundError(f"NB at {self.remote} refused the transaction: {exc}") \
                    from exc
            return command.result
        raise AssertionError("not reached")

    def close(self) -> None:
        if self.api is not None:
            self.api.ovsdb_connection.stop(timeout=5)
            self.api = None
