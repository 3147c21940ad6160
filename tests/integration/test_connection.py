"""NbConnection against real ovsdb-servers: unreachable NB, a hung NB, restarts, two servers."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from northbound import names
from northbound.connection import NbConnection, NorthboundUnavailable
from northbound.reconciler import Reconciler
from northbound.rows import LogicalSwitch, LogicalSwitchPort, Owner
from tests.integration.conftest import NbServer

SUBNET = Owner(names.OwnerType.SUBNET, "ovn-default")
POD = Owner(names.OwnerType.POD, "default/web-1")


def rows(addresses: str = "0a:58:0a:10:00:05 10.16.0.5") -> list:
    return [
        LogicalSwitch(owner=SUBNET, name="ovn-default"),
        LogicalSwitchPort(owner=POD, name="default_web-1", switch="ovn-default",
                          addresses=(addresses,), options={"requested-chassis": "node1"}),
    ]


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stale_unix_socket(path: Path) -> Path:
    """A socket file nobody listens on any more (what a crashed ovsdb-server leaves)."""
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    return path


@pytest.mark.parametrize(
    "make_remote",
    [
        lambda tmp: f"unix:{tmp / 'no-such-dir' / 'nb.sock'}",
        lambda tmp: f"unix:{tmp / 'nb.sock'}",
        lambda tmp: f"unix:{_stale_unix_socket(tmp / 'stale.sock')}",
        lambda tmp: f"tcp:127.0.0.1:{_free_tcp_port()}",
    ],
    ids=["missing-dir", "missing-socket", "stale-socket", "tcp-closed-port"],
)
def test_no_server_is_unavailable_quickly(tmp_path: Path, make_remote) -> None:
    remote = make_remote(tmp_path)
    started = time.monotonic()
    with pytest.raises(NorthboundUnavailable) as err:
        NbConnection(remote, timeout=10).start()
    assert time.monotonic() - started < 15
    message = str(err.value)
    assert remote in message
    assert "kovn sandbox up" in message


def test_context_manager_reports_unavailable(tmp_path: Path) -> None:
    remote = f"unix:{tmp_path / 'nb.sock'}"
    with pytest.raises(NorthboundUnavailable, match="kovn sandbox up"), NbConnection(remote):
        pass


def test_hung_server_is_unavailable_after_timeout(nb_server: NbServer) -> None:
    """A server that accepts connections but never answers (stopped) must not hang start()."""
    assert nb_server.proc is not None
    nb_server.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(NorthboundUnavailable) as err:
            NbConnection(nb_server.remote, timeout=2).start()
        assert time.monotonic() - started < 15
        assert nb_server.remote in str(err.value) and "kovn sandbox up" in str(err.value)
    finally:
        nb_server.proc.send_signal(signal.SIGCONT)
    # Once it answers again, connecting works.
    with NbConnection(nb_server.remote, timeout=10) as nb:
        assert not Reconciler(nb).reconcile([])


def test_reconnects_after_server_restart(nb_server: NbServer, nb: NbConnection,
                                         reconciler: Reconciler) -> None:
    reconciler.reconcile(rows())

    nb_server.stop()
    nb_server.start()  # same database file: the rows are still there

    # The IDL reconnects by itself; the transaction waits for it and then goes through.
    result = reconciler.reconcile(rows("0a:58:0a:10:00:05 10.16.0.9"))
    assert [u.row.key for u in result.updates] == ["default_web-1"]
    assert not result.creates and not result.deletes
    assert nb_server.nbctl("get", "Logical_Switch_Port", "default_web-1", "addresses") == (
        '["0a:58:0a:10:00:05 10.16.0.9"]')
    assert not reconciler.reconcile(rows("0a:58:0a:10:00:05 10.16.0.9"))

    # Drift made while kovn was away is seen after the reconnect and repaired.
    nb_server.stop()
    nb_server.start()
    nb_server.nbctl("lsp-del", "default_web-1")
    deadline = time.monotonic() + 10
    while not reconciler.plan(rows("0a:58:0a:10:00:05 10.16.0.9")).creates:
        assert time.monotonic() < deadline, "the replica never saw the deleted port"
        time.sleep(0.05)
    reconciler.reconcile(rows("0a:58:0a:10:00:05 10.16.0.9"))
    assert nb_server.nbctl("lsp-list", "ovn-default").endswith("(default_web-1)")


@pytest.fixture
def second_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NbServer]:
    server = NbServer(tmp_path_factory.mktemp("second"))
    server.start()
    yield server
    server.stop()


def test_two_connections_in_one_process(nb_server: NbServer, second_server: NbServer) -> None:
    """ovsdbapp keeps its connection on the API class; each NbConnection must get its own."""
    with NbConnection(nb_server.remote, timeout=10) as one, \
            NbConnection(second_server.remote, timeout=10) as two:
        Reconciler(one).reconcile(rows()[:1])
        Reconciler(two).reconcile([LogicalSwitch(owner=SUBNET, name="join")])
        assert one.api.ovsdb_connection is not two.api.ovsdb_connection
    assert nb_server.nbctl("ls-list").split()[1:] == ["(ovn-default)"]
    assert second_server.nbctl("ls-list").split()[1:] == ["(join)"]


def test_close_is_idempotent(nb_server: NbServer) -> None:
    nb = NbConnection(nb_server.remote, timeout=10).start()
    nb.close()
    nb.close()
    assert nb.api is None
