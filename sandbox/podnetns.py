"""Pod network namespaces created and deleted in-process, the way `ip netns add/delete` does.

The sandbox kubelet makes one netns per pod; three `ip` execs per pod (list, add, lo up) and
two more per deletion cost more CPU than kovn spends on the pod, which would distort what
bench/pod_ready.py measures. So the kubelet does what iproute2 does, from a thread: unshare
that thread's network namespace (a netns is per thread on Linux), bind-mount it on
/var/run/netns/NAME (the name `ip netns` and the CNI use), bring lo up with an ioctl, and
return the thread to where it was. Deleting is a lazy unmount and an unlink. The names stay
visible to `ip netns` as usual. If /var/run/netns is not yet a shared mount point (no
`ip netns add` has run on this machine since boot), creation falls back to `ip netns add`,
which sets that up.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

from node.netns import NETNS_RUN_DIR, setns, unshare_net
from sandbox import resolvconf
from sandbox.netns import netns_add

MS_BIND = 0x1000
MNT_DETACH = 0x2
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def path(name: str) -> str:
    return f"{NETNS_RUN_DIR}/{name}"


def exists(name: str) -> bool:
    return os.path.exists(path(name))


def _run_dir_shared() -> bool:
    """Whether NETNS_RUN_DIR is a mount point with shared propagation (as iproute2 makes it,
    so that the bind mounts appear in every mount namespace, e.g. `ip netns exec`'s)."""
    real = os.path.realpath(NETNS_RUN_DIR)
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[4] == real and any(f.startswith("shared:") for f in fields[6:]):
                return True
    return False


def _lo_up() -> None:
    """`ip link set lo up` in the calling thread's netns."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = struct.pack("16sH", b"lo", 0).ljust(40, b"\0")
        flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, ifreq)[:18])[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP).ljust(40,
                                                                                        b"\0"))


def create(name: str) -> None:
    """A new netns named `name` with lo up; FileExistsError if the name is taken."""
    if not _run_dir_shared():
        netns_add(name)
        return
    target = path(name)
    os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            unshare_net()
            try:
                _check(_libc.mount(b"/proc/thread-self/ns/net", target.encode(), b"none",
                                   MS_BIND, None), f"bind-mounting the new netns on {target}")
                _lo_up()
            finally:
                setns(home)
        except BaseException:
            _libc.umount2(target.encode(), MNT_DETACH)
            os.unlink(target)
            raise
    finally:
        os.close(home)


def delete(name: str) -> bool:
    """Delete netns `name` if it exists (its veth ends go with it, and its /etc/netns files:
    a pod's resolv.conf); True if it did."""
    resolvconf.remove(name)
    target = path(name)
    if not os.path.exists(target):
        return False
    _libc.umount2(target.encode(), MNT_DETACH)  # EINVAL if not mounted: removed just below
    try:
        os.unlink(target)
    except FileNotFoundError:
        return False
    return True
