"""Entering network namespaces with setns(2): the one helper the node agent and the sandbox use.

A socket (netlink, ioctl, TCP/UDP) belongs to the network namespace of the thread that created
it, so code that works inside a pod moves only its own thread into the pod's namespace for the
instant it takes to open its sockets, then returns: no process is forked and no other thread
moves. Standard library only (ctypes), so the sandbox's probes need nothing else; the sandbox
may import node/, never the reverse.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"  # where `ip netns add NAME` mounts NAME
_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open as `fd`."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns failed: {os.strerror(err)}")


def unshare_net() -> None:
    """Move the calling thread into a new, empty network namespace (`ip netns add` does this
    before bind-mounting it on its name; sandbox.podnetns does the same in-process)."""
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET) failed: {os.strerror(err)}")


def netns_path(netns: str) -> str:
    """The file of a netns given by `ip netns` name or by path (`/proc/<pid>/ns/net`)."""
    return netns if "/" in netns else f"{NETNS_RUN_DIR}/{netns}"


@contextlib.contextmanager
def thread_in_netns(fd: int) -> Iterator[None]:
    """Run the body with this thread in netns `fd`; always come back (or die loudly)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        setns(fd)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(home)


@contextlib.contextmanager
def in_netns(netns: str) -> Iterator[None]:
    """Run the body with this thread in `netns` (an `ip netns` name or a path);
    FileNotFoundError if there is no such netns."""
    target = os.open(netns_path(netns), os.O_RDONLY)
    try:
        with thread_in_netns(target):
            yield
    finally:
        os.close(target)
