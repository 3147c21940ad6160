"""node.southbound against a real ovsdb-server with the OVN southbound schema: an ADD finds
the pod's network in its Port_Binding (as ovn-northd copies it from the port's external_ids),
only for the very pod it is for, and the agent monitors only the ports ADDs wait for."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from contract.podnetwork import POD_NETWORK
from node.southbound import PortBindings
from northbound.names import POD_UID_KEY

SB_SCHEMA = Path("/usr/share/ovn/ovn-sb.ovsschema")
NETWORK = '{"ip":"10.16.0.9/16","mac":"0a:58:0a:10:00:09","subnet":"ovn-default"}'


class SbServer:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.remote = f"unix:{workdir / 'sb.sock'}"
        db = workdir / "sb.db"
        subprocess.run(["ovsdb-tool", "create", str(db), str(SB_SCHEMA)], check=True)
        self.proc = subprocess.Popen(
            ["ovsdb-server", "--no-chdir", f"--remote=p{self.remote}",
             f"--unixctl={workdir / 'sb.ctl'}", f"--log-file={workdir / 'sb.log'}", str(db)])
        deadline = time.monotonic() + 10
        while not (workdir / "sb.sock").exists():
            assert time.monotonic() < deadline, "ovsdb-server did not start"
            time.sleep(0.02)
        self.transact({"op": "insert", "table": "Datapath_Binding", "uuid-name": "dp",
                       "row": {"tunnel_key": 1}})
        self.keys = 0

    def transact(self, *ops: dict) -> list:
        out = subprocess.run(["ovsdb-client", "transact", self.remote,
                              json.dumps(["OVN_Southbound", *ops])],
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out)

    def bind(self, port: str, uid: str, network: str = NETWORK) -> None:
        """A Port_Binding as ovn-northd writes it for a kovn pod's port."""
        self.keys += 1
        datapath = self.transact({"op": "select", "table": "Datapath_Binding", "where": [],
                                  "columns": ["_uuid"]})[0]["rows"][0]["_uuid"]
        self.transact({"op": "insert", "table": "Port_Binding", "row": {
            "logical_port": port, "tunnel_key": self.keys, "datapath": datapath,
            "external_ids": ["map", [[POD_UID_KEY, uid], [POD_NETWORK, network]]]}})

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[SbServer]:
    server = SbServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def bindings(sb: SbServer) -> Iterator[tuple[PortBindings, threading.Event]]:
    changed = threading.Event()
    found = PortBindings(sb.remote, on_change=changed.set).start()
    yield found, changed
    found.close()


def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    return value


def test_a_waiting_add_finds_the_network_of_its_own_pod(
        sb: SbServer, bindings: tuple[PortBindings, threading.Event]) -> None:
    found, changed = bindings
    with found.wanted("ns_a"):
        time.sleep(0.2)  # the monitor is up, nothing bound yet
        assert found.network("ns_a", "uid-a") is None
        changed.clear()
        sb.bind("ns_a", "uid-a")
        assert eventually(lambda: found.network("ns_a", "uid-a")) == NETWORK
        assert changed.is_set()  # the waiting ADDs were woken
        assert found.network("ns_a", "uid-older-pod") is None  # not this pod's port
        assert found.network("ns_a", "") is None


def test_only_the_ports_adds_wait_for_are_monitored(
        sb: SbServer, bindings: tuple[PortBindings, threading.Event]) -> None:
    found, _ = bindings
    sb.bind("ns_b", "uid-b")
    with found.wanted("ns_a"):
        sb.bind("ns_a", "uid-a")
        eventually(lambda: found.network("ns_a", "uid-a"))
        assert found.network("ns_b", "uid-b") is None  # in the database, not asked for
        with found.wanted("ns_b"):  # an existing row arrives with the new condition
            assert eventually(lambda: found.network("ns_b", "uid-b")) == NETWORK
    eventually(lambda: found.network("ns_a", "uid-a") is None)  # dropped once unwanted


def test_without_a_southbound_database_nothing_is_found(tmp_path: Path) -> None:
    found = PortBindings(f"unix:{tmp_path / 'missing.sock'}").start()
    try:
        with found.wanted("ns_a"):
            time.sleep(0.2)
            assert found.network("ns_a", "uid-a") is None
    finally:
        started = time.monotonic()
        found.close()
        assert time.monotonic() - started < 2
