"""The node's Open_vSwitch database through ovsdbapp: chassis settings, br-int, ports.

One IDL connection per agent. Writes go through ovsdbapp's vsctl-style transaction, which
returns once ovs-vswitchd has applied them (like ovs-vsctl without --no-wait), so a port
added here has its datapath port when add_port returns. Reads look at the IDL replica under
the connection's lock; waiting for ovn-controller (external_ids:ovn-installed) is woken by
the IDL's change notifications instead of polling the server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ovsdbapp import exceptions as ovsdbapp_exceptions
from ovsdbapp.backend.ovs_idl import connection as ovsdbapp_connection
from ovsdbapp.backend.ovs_idl import idlutils
from ovsdbapp.backend.ovs_idl import transaction as ovsdbapp_transaction
from ovsdbapp.schema.open_vswitch import impl_idl

from node.group_commit import GroupCommit

LOG = logging.getLogger(__name__)
SCHEMA = "Open_vSwitch"
# Only the columns kovn and ovsdbapp's bridge and port commands read or write: ovs-vswitchd
# rewrites `statistics`, `status` and the link columns of every interface every few seconds,
# and ovn-controller keeps its conntrack zones in br-int's external_ids (a map that grows by
# a key or two per pod, rewritten as pods come and go); each such update would cost the
# agent CPU for every pod on the node (the zones alone were 42 of 88 Bridge updates, 400 KB,
# in a burst of 30 pods).
COLUMNS: dict[str, tuple[str, ...] | None] = {
    "Open_vSwitch": None,  # all: ovsdbapp's vsctl-style commit waits on next_cfg/cur_cfg
    "Bridge": ("name", "ports", "datapath_type", "fail_mode", "other_config"),
    "Port": ("name", "interfaces", "external_ids"),
    "Interface": ("name", "type", "external_ids", "ofport", "mac_in_use", "mac",
                  "mtu_request", "options", "error"),
}

# external_ids of a pod's Interface. iface-id, iface-id-ver and attached_mac are OVN's;
# sandbox (container id) is ovn-kubernetes' convention; the kovn.io/ keys are kovn's own.
IFACE_ID = "iface-id"
IFACE_ID_VER = "iface-id-ver"
ATTACHED_MAC = "attached_mac"
SANDBOX = "sandbox"
OVN_INSTALLED = "ovn-installed"
NETNS_KEY = "kovn.io/netns"
IFNAME_KEY = "kovn.io/ifname"
POD_KEY = "kovn.io/pod"
NETWORK_KEY = "kovn.io/network"
INDEXED_KEYS = (IFACE_ID, SANDBOX)


class OvsError(RuntimeError):
    """The Open_vSwitch database is unreachable or refused a change."""


class OvsTimeout(OvsError):
    """No answer to a transaction in time (it may still be committed later)."""


@dataclass(frozen=True)
class Iface:
    """An Interface row as the agent needs it."""

    name: str
    external_ids: dict[str, str]
    ofport: int | None
    mac_in_use: str
    error: str = ""  # why ovs-vswitchd could not open it (then ofport is -1)


def _iface(row: Any) -> Iface:
    return Iface(row.name, dict(row.external_ids), row.ofport[0] if row.ofport else None,
                 row.mac_in_use[0] if row.mac_in_use else "", row.error[0] if row.error else "")


class _NotifyingIdl(ovsdbapp_connection.OvsdbIdl):
    """An IDL that counts changes, wakes waiters on each one, and indexes the Interface rows
    by name and by the external_ids an ADD or DEL looks them up by.

    Reading a set or map column of an IDL row converts the whole datum on every access, so a
    scan of every Interface costs milliseconds once a node has a few dozen pods; an ADD did
    several (stale ports, then one per wake-up while waiting for ovn-installed). The index is
    kept in `notify`, which the IDL calls on the connection's thread under its lock, for
    every row created, updated or deleted, the initial contents included.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.changed = threading.Condition()
        self.generation = 0
        self.iface_rows: dict[str, Any] = {}  # name -> Interface row
        self.iface_keys: dict[tuple[str, str], set[str]] = {}  # (key, value) -> names
        self._keys_of: dict[str, set[tuple[str, str]]] = {}  # name -> its (key, value)s

    def notify(self, event: Any, row: Any, updates: Any = None) -> None:
        if row._table.name == "Interface":
            self._index(event, row)
        with self.changed:
            self.generation += 1
            self.changed.notify_all()

    def _index(self, event: Any, row: Any) -> None:
        name = row.name
        if event == "delete":  # ovs.db.idl.ROW_DELETE
            if self.iface_rows.get(name) is row:
                del self.iface_rows[name]
            keys: set[tuple[str, str]] = set()
        else:
            self.iface_rows[name] = row
            ids = row.external_ids
            keys = {(key, ids[key]) for key in INDEXED_KEYS if key in ids}
        old = self._keys_of.pop(name, set())
        for key in old - keys:
            names = self.iface_keys.get(key, set())
            names.discard(name)
            if not names:
                self.iface_keys.pop(key, None)
        for key in keys - old:
            self.iface_keys.setdefault(key, set()).add(name)
        if keys:
            self._keys_of[name] = keys


class _NoWaitTransaction(ovsdbapp_transaction.Transaction):
    """A transaction that returns once the database committed it, like `ovs-vsctl --no-wait`.

    ovsdbapp's default (vsctl-style) transaction then waits for ovs-vswitchd to reconfigure,
    on the connection's one thread: under a burst every pod's port waited behind every
    other's reconfiguration (0.5 s per ADD at 50 pods per node). A pod's port needs no such
    wait: the ADD waits for ovn-installed, which ovn-controller sets only once vswitchd has
    the port, and Ovs.wait_installed gives up early on an Interface vswitchd refused.
    """

    def pre_commit(self, txn: Any) -> None:
        txn.expected_ifaces = set()  # ovsdbapp's add_port records its new Interface here


def _fetch_schema(remote: str, timeout: float) -> Any:
    """get_schema_helper with a deadline (alone it blocks forever on a mute server)."""
    outcome: dict[str, Any] = {}

    def fetch() -> None:
        try:
            outcome["helper"] = idlutils.get_schema_helper(remote, SCHEMA)
        except Exception as exc:  # ovsdbapp raises a bare Exception
            outcome["error"] = exc

    worker = threading.Thread(target=fetch, name="kovn-ovs-schema", daemon=True)
    worker.start()
    worker.join(timeout)
    detail = outcome.get("error", f"no answer within {timeout:.0f}s")
    if "helper" not in outcome:
        raise OvsError(f"cannot reach the Open_vSwitch database at {remote}: {detail}. Is "
                       "ovsdb-server running (systemctl status openvswitch-switch), and is "
                       "--ovs-db right (e.g. unix:/var/run/openvswitch/db.sock)?")
    return outcome["helper"]


class Ovs:
    def __init__(self, remote: str, timeout: float = 30.0) -> None:
        self.remote = remote
        self.timeout = timeout
        self.api: Any = None
        self._idl: _NotifyingIdl | None = None
        self.ports = GroupCommit(lambda commands: self.execute(*commands, wait_vswitchd=False),
                                 final=(OvsTimeout,))
        """Pods' port changes, committed together under a burst (node.group_commit)."""

    def start(self) -> Ovs:
        helper = _fetch_schema(self.remote, self.timeout)
        for table, columns in COLUMNS.items():
            if columns is None:
                helper.register_table(table)
            else:
                helper.register_columns(table, list(columns))
        self._idl = _NotifyingIdl(self.remote, helper)
        conn = ovsdbapp_connection.Connection(self._idl, timeout=self.timeout)
        # A subclass per connection: ovsdbapp keeps the connection in a class attribute.
        api_class = type("KovnOvsApi", (impl_idl.OvsdbIdl,), {"_ovsdb_connection": None})
        try:
            self.api = api_class(conn)
        except ovsdbapp_exceptions.OvsdbConnectionUnavailable as exc:
            raise OvsError(f"cannot reach the Open_vSwitch database at {self.remote}: "
                           f"{exc}") from exc
        return self

    def close(self) -> None:
        if self.api is not None:
            self.api.ovsdb_connection.stop(timeout=5)
            self.api = None

    # ------------------------------------------------------------------ writes

    def execute(self, *commands: Any, wait_vswitchd: bool = True) -> list[Any]:
        """Run the commands in one transaction; OvsError if it fails. Returns once
        ovs-vswitchd applied it, or only committed it without `wait_vswitchd`."""
        try:
            if wait_vswitchd:
                with self.api.transaction(check_error=True, log_errors=False) as txn:
                    for command in commands:
                        txn.add(command)
            else:
                txn = _NoWaitTransaction(self.api, self.api.ovsdb_connection, self.timeout,
                                         check_error=True, log_errors=False)
                for command in commands:
                    txn.add(command)
                txn.commit()
        except ovsdbapp_exceptions.TimeoutException as exc:
            raise OvsTimeout(f"Open_vSwitch transaction at {self.remote} timed out: "
                             f"{exc}") from exc
        except (RuntimeError, LookupError) as exc:
            raise OvsError(f"Open_vSwitch at {self.remote} refused the transaction: "
                           f"{exc}") from exc
        return [command.result for command in commands]

    def configure_chassis(self, external_ids: Mapping[str, str]) -> None:
        """Merge `external_ids` into the Open_vSwitch row (other keys stay)."""
        self.execute(self.api.db_set("Open_vSwitch", ".", ("external_ids", dict(external_ids))))

    def ensure_bridge(self, name: str, datapath_type: str) -> None:
        """The integration bridge: secure fail mode (no flows = no traffic), no in-band."""
        self.execute(
            self.api.add_br(name, may_exist=True, datapath_type=datapath_type),
            self.api.db_set("Bridge", name, ("fail_mode", "secure"),
                            ("other_config", {"disable-in-band": "true"})),
        )

    def ensure_internal_port(self, bridge: str, name: str, external_ids: Mapping[str, str],
                             mac: str, mtu: int) -> None:
        """An internal interface (the management port), created or brought up to date."""
        self.execute(
            self.api.add_port(bridge, name, may_exist=True),
            self.api.db_set("Interface", name, ("type", "internal"),
                            ("external_ids", dict(external_ids)), ("mac", mac),
                            ("mtu_request", mtu)),
        )

    def replace_port(self, bridge: str, name: str, external_ids: Mapping[str, str],
                     stale: Iterable[str] = ()) -> None:
        """Delete the `stale` ports and (re)create port `name` in one transaction, shared with
        the other pods' port changes waiting at the same time (node.group_commit)."""
        commands = [self.api.del_port(port, if_exists=True) for port in {*stale, name}]
        commands.append(self.api.add_port(bridge, name, may_exist=False,
                                          external_ids=dict(external_ids)))
        self.ports.submit(commands)

    def del_ports(self, names: Iterable[str]) -> None:
        names = sorted(set(names))
        if names:
            self.ports.submit([self.api.del_port(name, if_exists=True) for name in names])

    # ------------------------------------------------------------------ reads

    def interfaces(self, where: Callable[[Iface], bool] = lambda _i: True) -> list[Iface]:
        with self.api.ovsdb_connection.lock:
            rows = [_iface(row) for row in self.api.tables["Interface"].rows.values()]
        return [iface for iface in rows if where(iface)]

    def interface(self, name: str) -> Iface | None:
        assert self._idl is not None
        with self.api.ovsdb_connection.lock:
            row = self._idl.iface_rows.get(name)
            return None if row is None else _iface(row)

    def interfaces_with(self, key: str, value: str) -> list[Iface]:
        """The Interfaces whose external_ids[key] is `value`, for a key of INDEXED_KEYS."""
        assert self._idl is not None and key in INDEXED_KEYS
        with self.api.ovsdb_connection.lock:
            rows = [self._idl.iface_rows[name]
                    for name in self._idl.iface_keys.get((key, value), ())
                    if name in self._idl.iface_rows]
            return [_iface(row) for row in rows]

    def bridge_ports(self, bridge: str) -> set[str]:
        with self.api.ovsdb_connection.lock:
            for row in self.api.tables["Bridge"].rows.values():
                if row.name == bridge:
                    return {port.name for port in row.ports}
        return set()

    def connected(self) -> bool:
        return self._idl is not None and self._idl._session.is_connected()

    def wait_interface(self, name: str, ready: Callable[[Iface], bool],
                       timeout: float) -> Iface | None:
        """Wait until Interface `name` exists and satisfies `ready`; None after `timeout`."""
        assert self._idl is not None
        deadline = time.monotonic() + timeout
        changed = self._idl.changed
        while True:
            with changed:
                seen = self._idl.generation
            iface = self.interface(name)
            if iface is not None and ready(iface):
                return iface
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with changed:
                if self._idl.generation == seen:
                    changed.wait(min(remaining, 1.0))

    def wait_installed(self, name: str, timeout: float) -> bool:
        """Wait for ovn-controller to mark Interface `name` external_ids:ovn-installed=true;
        OvsError as soon as ovs-vswitchd reports that it could not open the interface."""
        iface = self.wait_interface(
            name, lambda i: i.external_ids.get(OVN_INSTALLED) == "true" or i.ofport == -1,
            timeout)
        if iface is not None and iface.external_ids.get(OVN_INSTALLED) != "true":
            raise OvsError(f"ovs-vswitchd could not add {name}: {iface.error or 'ofport -1'}")
        return iface is not None
