"""Pod netns made in-process (sandbox.podnetns) are ordinary `ip netns` namespaces: listed,
usable by `ip -n`, with lo up, and gone after delete. Needs root."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid

import pytest

from sandbox import podnetns
from sandbox.netns import netns_list

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def test_create_and_delete() -> None:
    name = f"kvt-{uuid.uuid4().hex[:8]}"
    home = os.readlink("/proc/thread-self/ns/net")
    podnetns.create(name)
    try:
        assert os.readlink("/proc/thread-self/ns/net") == home, "the thread came back"
        assert name in netns_list()
        lo = subprocess.run(["ip", "-n", name, "-o", "link", "show", "lo"], capture_output=True,
                            text=True, check=True).stdout
        assert "<LOOPBACK,UP" in lo, lo
        with pytest.raises(FileExistsError):
            podnetns.create(name)
    finally:
        assert podnetns.delete(name)
    assert name not in netns_list() and not podnetns.exists(name)
    assert podnetns.delete(name) is False  # deleting again is fine


def test_concurrent_creates_from_threads() -> None:
    names = [f"kvt-{uuid.uuid4().hex[:8]}" for _ in range(8)]
    threads = [threading.Thread(target=podnetns.create, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        inodes = {os.stat(podnetns.path(n)).st_ino for n in names}
        assert len(inodes) == len(names), "each name is its own namespace"
    finally:
        for name in names:
            podnetns.delete(name)
