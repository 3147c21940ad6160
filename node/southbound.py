"""Pods' networks from OVN's southbound database, for ADDs that would wait for the annotation.

The controller writes a pod's network into its logical switch port's external_ids in the same
NB transaction as the port (controller/topology.py pod_rows), and ovn-northd copies those to
the port's Port_Binding. The annotation carrying the same network takes one more trip,
through the API server: under a burst of pods its PATCH waits ~0.6 s for the API server's CPU
and the watch delivering it as long again (bench.pod_ready prints the steps). So an ADD also
asks the Port_Binding and takes whichever answers first; both come from one decision of the
controller, and a restarted controller keeps an address that only NB records
(operators/pods.py restore_from_nb).

Only the ports of ADDs in progress are monitored (a conditional monitor on logical_port, two
columns), so an agent never holds the cluster's ports, and the southbound servers send it
nothing about other pods. Without the southbound database (unreachable, or a remote this
Python client cannot open) ADDs simply wait for the annotation, as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import ovs.db.idl
import ovs.poller
from ovsdbapp.backend.ovs_idl import idlutils

from contract.podnetwork import POD_NETWORK
from northbound.names import POD_UID_KEY

LOG = logging.getLogger(__name__)
SCHEMA = "OVN_Southbound"
TABLE = "Port_Binding"
COLUMNS = ("logical_port", "external_ids")
RETRY = 5.0
"""Seconds between attempts to reach the southbound database."""


class PortBindings:
    """The external_ids of the Port_Bindings of the ports `wanted` now, kept current by an
    IDL on its own thread; `on_change` is called (on that thread) whenever they change."""

    def __init__(self, remote: str, on_change: Callable[[], None] = lambda: None) -> None:
        self.remote = remote
        self.on_change = on_change
        self._lock = threading.Lock()
        self._wanted: dict[str, int] = {}  # logical_port -> ADDs waiting for it
        self._ids: dict[str, dict[str, str]] = {}  # logical_port -> external_ids
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kovn-southbound", daemon=True)

    def start(self) -> PortBindings:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._wake()
        self._thread.join(5)

    @contextlib.contextmanager
    def wanted(self, logical_port: str) -> Iterator[None]:
        """Monitor this port while the block runs (an ADD waiting for its network)."""
        with self._lock:
            self._wanted[logical_port] = self._wanted.get(logical_port, 0) + 1
        self._wake()
        try:
            yield
        finally:
            with self._lock:
                if self._wanted[logical_port] == 1:
                    del self._wanted[logical_port]
                else:
                    self._wanted[logical_port] -= 1
            self._wake()

    def network(self, logical_port: str, pod_uid: str) -> str | None:
        """The encoded network the controller gave the pod with uid `pod_uid` on this port,
        if the southbound database has it (a port of an older pod of the same name: None)."""
        with self._lock:
            ids = self._ids.get(logical_port)
        if not ids or not pod_uid or ids.get(POD_UID_KEY) != pod_uid:
            return None
        return ids.get(POD_NETWORK)

    # ------------------------------------------------------------------ the IDL's thread

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        if any(r.strip().startswith("ssl:") for r in self.remote.split(",")):
            LOG.info("southbound %s is SSL, for which the agent has no keys: ADDs wait for "
                     "the annotation", self.remote)
            return
        last_error = ""
        while not self._stop.is_set():
            try:
                idl = self._connect()
            except Exception as exc:  # any failure: ADDs use the annotation only; retry
                if str(exc) != last_error:  # once per new reason, not every RETRY seconds
                    LOG.warning("southbound %s unavailable (%s): ADDs wait for the "
                                "annotation; retrying every %.0fs", self.remote, exc, RETRY)
                    last_error = str(exc)
                self._stop.wait(RETRY)
                continue
            last_error = ""
            try:
                self._serve(idl)
            except Exception:  # never leave the ADDs without a reader: start over
                LOG.exception("southbound %s: reading Port_Bindings failed; reconnecting",
                              self.remote)
                self._stop.wait(RETRY)
            finally:
                idl.close()

    def _connect(self) -> ovs.db.idl.Idl:
        helper = idlutils.get_schema_helper(self.remote, SCHEMA)
        helper.register_columns(TABLE, list(COLUMNS))
        idl = ovs.db.idl.Idl(self.remote, helper, leader_only=False)
        # Nothing until an ADD asks: the first monitor request sends the acknowledged
        # condition, which python-ovs starts at [True] (every port of the cluster).
        idl.tables[TABLE].condition_state._ack_cond = [False]
        return idl

    def _serve(self, idl: ovs.db.idl.Idl) -> None:
        condition: list[Any] = [False]
        seqno = idl.change_seqno
        while not self._stop.is_set():
            with self._lock:
                wanted = sorted(self._wanted)
            wanted_condition = [["logical_port", "==", p] for p in wanted] or [False]
            if wanted_condition != condition:
                condition = wanted_condition
                idl.cond_change(TABLE, condition)
            idl.run()
            if idl.change_seqno != seqno:
                seqno = idl.change_seqno
                ids = {row.logical_port: dict(row.external_ids)
                       for row in idl.tables[TABLE].rows.values()}
                with self._lock:
                    self._ids = ids
                self.on_change()
            poller = ovs.poller.Poller()
            idl.wait(poller)
            poller.fd_wait(self._wake_r, ovs.poller.POLLIN)
            poller.timer_wait(1000)
            poller.block()
            with contextlib.suppress(OSError):  # BlockingIOError: nothing written
                os.read(self._wake_r, 4096)
