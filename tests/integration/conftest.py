"""A real ovsdb-server with the OVN NB schema per test (no northd needed for NB semantics)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ovs.jsonrpc
import pytest

from northbound.connection import NbConnection
from northbound.reconciler import Reconciler

NB_SCHEMA = Path("/usr/share/ovn/ovn-nb.ovsschema")


class NbServer:
    """ovsdb-server on a unix socket in a temporary directory."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.db = workdir / "nb.db"
        self.sock = workdir / "nb.sock"
        self.remote = f"unix:{self.sock}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if not self.db.exists():
            subprocess.run(["ovsdb-tool", "create", str(self.db), str(NB_SCHEMA)], check=True)
        self.proc = subprocess.Popen(
            ["ovsdb-server", "--no-chdir", f"--remote=punix:{self.sock}",
             f"--unixctl={self.dir / 'nb.ctl'}", f"--log-file={self.dir / 'nb.log'}",
             str(self.db)],
        )
        deadline = time.monotonic() + 10
        while not self.sock.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"ovsdb-server did not create {self.sock}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
        self.sock.unlink(missing_ok=True)

    def nbctl(self, *args: str) -> str:
        out = subprocess.run(
            ["ovn-nbctl", f"--db={self.remote}", *args], check=True, capture_output=True, text=True
        )
        return out.stdout.strip()


@pytest.fixture
def nb_server(tmp_path: Path) -> Iterator[NbServer]:
    if shutil.which("ovsdb-server") is None:
        pytest.fail("ovsdb-server is missing: install openvswitch-switch (see README)")
    server = NbServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nb(nb_server: NbServer) -> Iterator[NbConnection]:
    with NbConnection(nb_server.remote, timeout=10) as conn:
        yield conn


@pytest.fixture
def reconciler(nb: NbConnection) -> Reconciler:
    return Reconciler(nb)


class Wire:
    """The operations of every transact the IDL sends (patched into ovs.jsonrpc)."""

    def __init__(self) -> None:
        self.transacts: list[list[dict[str, Any]]] = []

    def mark(self) -> None:
        self.transacts.clear()

    def ops(self, table: str | None = None) -> list[dict[str, Any]]:
        return [op for ops in self.transacts for op in ops
                if table is None or op.get("table") == table]

    def writes_of(self, table: str, column: str) -> list[tuple[str, Any]]:
        """(how, value) of each write to `column` of `table` rows: ("update", whole value) or
        ("insert"/"delete", the mutation's elements)."""
        found: list[tuple[str, Any]] = []
        for op in self.ops(table):
            if op["op"] in ("insert", "update") and column in op.get("row", {}):
                found.append((op["op"], op["row"][column]))
            for col, how, value in op.get("mutations", ()):
                if col == column:
                    found.append((how, value))
        return found


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    seen = Wire()
    send = ovs.jsonrpc.Connection.send

    def recording(conn: Any, msg: Any) -> Any:
        if getattr(msg, "method", None) == "transact":
            seen.transacts.append([op for op in msg.params[1:] if isinstance(op, dict)])
        return send(conn, msg)

    monkeypatch.setattr(ovs.jsonrpc.Connection, "send", recording)
    return seen


def elements(value: Any) -> list[Any]:
    """The atoms of an OVSDB set/map JSON value."""
    if isinstance(value, list) and value and value[0] in ("set", "map"):
        return value[1]
    return [value]
