"""The real `kovn-cni` asked to DEL while no agent listens (stopped, killed, never started).

DEL must be idempotent: when the pod's netns is gone (or the runtime gives none), nothing is
left that only DEL could clean (the agent removes stale OVS ports when it starts), so DEL
succeeds instead of "try again later" for as long as the agent is down. While the netns
still exists the attachment is live, and the error stays. A real netns needs root.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.cni_protocol import Code
from node.cni_server import CniServer
from sandbox.netns import netns_add, netns_delete
from tests.integration.test_cni_plugin import (  # noqa: F401 - shim: runs each test on both
    CONF,
    StandIn,
    add_env,
    assert_error,
    cni,
    shim,
)

PREV = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/gone"}],
        "ips": [{"address": "10.16.0.5/16", "interface": 0}]}


@pytest.fixture
def no_agent(tmp_path: Path) -> str:
    return str(tmp_path / "run" / "cni.sock")  # nothing there


@pytest.fixture
def killed_agent(tmp_path: Path) -> Iterator[str]:
    """The socket file a killed agent leaves: it exists, nobody accepts (ECONNREFUSED)."""
    path = str(tmp_path / "dead.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.close()  # bound, never listening: connect() is refused
    yield path


@pytest.mark.parametrize("netns", ["", "/var/run/netns/kvd-never-existed",
                                   "/proc/999999999/ns/net"])
@pytest.mark.parametrize("agent", ["no_agent", "killed_agent"])
def test_del_succeeds_when_the_netns_is_gone(netns: str, agent: str,
                                             request: pytest.FixtureRequest) -> None:
    sock = request.getfixturevalue(agent)
    conf = {**CONF, "socket": sock, "prevResult": PREV}
    rc, out, err = cni("DEL", conf, **add_env(CNI_NETNS=netns))
    assert (rc, out) == (0, None), err
    assert "nothing to delete" in err and sock in err  # said on stderr, for the runtime's log
    # Again (a runtime may repeat DEL): still success.
    assert cni("DEL", conf, **add_env(CNI_NETNS=netns))[:2] == (0, None)


def test_only_del_is_forgiven(no_agent: str) -> None:
    gone = "/var/run/netns/kvd-never-existed"
    assert_error(*cni("ADD", {**CONF, "socket": no_agent}, **add_env(CNI_NETNS=gone))[:2],
                 Code.TRY_AGAIN_LATER, "not reachable")
    assert_error(*cni("CHECK", {**CONF, "socket": no_agent, "prevResult": PREV},
                      **add_env(CNI_NETNS=gone))[:2], Code.TRY_AGAIN_LATER, "not reachable")
    assert_error(*cni("STATUS", {**CONF, "cniVersion": "1.1.0", "socket": no_agent})[:2],
                 Code.NOT_AVAILABLE, "not reachable")
    assert_error(*cni("GC", {**CONF, "cniVersion": "1.1.0", "socket": no_agent,
                             "cni.dev/valid-attachments": []})[:2],
                 Code.TRY_AGAIN_LATER, "not reachable")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")
def test_del_waits_for_the_agent_while_the_netns_exists(no_agent: str) -> None:
    """A live netns may hold a live attachment: retry (11) until it is gone."""
    name = f"kvd-{uuid.uuid4().hex[:8]}"
    netns_add(name)
    path = f"/var/run/netns/{name}"
    try:
        assert_error(*cni("DEL", {**CONF, "socket": no_agent}, **add_env(CNI_NETNS=path))[:2],
                     Code.TRY_AGAIN_LATER, "not reachable", no_agent)
    finally:
        netns_delete(name)
    rc, out, err = cni("DEL", {**CONF, "socket": no_agent}, **add_env(CNI_NETNS=path))
    assert (rc, out) == (0, None), err


def test_a_reachable_agent_still_gets_the_del(tmp_path: Path) -> None:
    """The shortcut is for an unreachable agent only: a live one does the DEL itself."""
    handler = StandIn()
    path = str(tmp_path / "cni.sock")
    server = CniServer(path, handler).start()
    try:
        rc, out, err = cni("DEL", {**CONF, "socket": path},
                           **add_env(CNI_NETNS="/var/run/netns/kvd-never-existed"))
    finally:
        server.stop()
    assert (rc, out) == (0, None)
    assert "nothing to delete" not in err
    assert [(r.command, r.netns) for r in handler.requests] == [
        ("DEL", "/var/run/netns/kvd-never-existed")]
