"""node.netns: the one setns helper (the agent's plumbing and the sandbox's probes use it)."""

from __future__ import annotations

import os
import socket

import pytest

from node import netns

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="setns needs CAP_SYS_ADMIN")


def test_netns_path() -> None:
    assert netns.netns_path("kovn-node1") == "/var/run/netns/kovn-node1"
    assert netns.netns_path("/proc/1/ns/net") == "/proc/1/ns/net"


def test_missing_netns() -> None:
    with pytest.raises(FileNotFoundError), netns.in_netns("kovn-no-such-netns-for-sure"):
        pass


@needs_root
def test_in_netns_comes_back() -> None:
    before = os.stat("/proc/thread-self/ns/net").st_ino
    with netns.in_netns(f"/proc/{os.getpid()}/ns/net"):
        socket.socket().close()
    assert os.stat("/proc/thread-self/ns/net").st_ino == before
