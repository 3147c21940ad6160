"""Links, addresses and routes with pyroute2, in the agent's netns and in pods' netns.

A netlink (or ioctl) socket belongs to the network namespace of the thread that created it,
so to work inside a pod the calling thread enters the pod's netns only for the instant it
takes to open its sockets, then returns; no process is forked and no other thread moves
(node.netns, the one setns helper, shared with the sandbox).

On the userspace datapath ovs-vswitchd reads a veth through an AF_PACKET socket, which takes
what the pod sends with partial checksums (and unsegmented GSO) as it is, so TCP breaks
unless tx checksum offload is off on the pod's end; `tx_checksum_off` does what
`ethtool -K <dev> tx off` does (ETHTOOL_STXCSUM; the kernel then drops TSO/GSO that depend
on it) without a process per call. The host end needs nothing: what ovs-vswitchd writes
into it through AF_PACKET is whole frames, which no offload touches (OVS's own userspace
tests turn tx off on the namespace end only).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from node.netns import netns_path, setns, thread_in_netns
from node.rtnl import Rtnl, RtnlError

SIOCGIFADDR = 0x8915
SIOCGIFNETMASK = 0x891B
SIOCGIFINDEX = 0x8933
SIOCETHTOOL = 0x8946
ETHTOOL_GTXCSUM = 0x16
ETHTOOL_STXCSUM = 0x17
IFNAMSIZ = 16
LOOPBACK_IFINDEX = 1  # lo's index in every netns (the kernel's LOOPBACK_IFINDEX)


class PlumbingError(RuntimeError):
    """A link, address or route could not be set up."""


class NetnsMissing(PlumbingError):
    """The pod's network namespace does not exist (any more)."""


def host_veth_name(container_id: str, ifname: str = "eth0") -> str:
    """The host end of a pod's veth: `veth` + 11 hex digits of sha1(container id), 15 chars.

    A second interface of the same container (another CNI_IFNAME) hashes the ifname too.
    """
    key = container_id if ifname == "eth0" else f"{container_id}/{ifname}"
    return "veth" + hashlib.sha1(key.encode()).hexdigest()[:11]


def random_mac() -> str:
    """A random locally administered unicast MAC (for a veth's host end)."""
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def open_netns(path: str) -> int:
    """An fd for the netns at `path` (`/var/run/netns/x`, `/proc/<pid>/ns/net`, or a name)."""
    path = netns_path(path)
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError as exc:
        raise NetnsMissing(f"network namespace {path} does not exist") from exc


def enter_netns(path: str) -> None:
    """Move the calling thread into the netns at `path` for good (dedicated threads only)."""
    fd = open_netns(path)
    try:
        setns(fd)
    finally:
        os.close(fd)


@dataclass
class NetnsHandle:
    """Sockets opened inside one netns: rtnetlink (node.rtnl, for ADD and DEL), one for
    ioctls (ethtool, ifindex) and, for the rarer reads, a pyroute2 handle: opened with the
    others where asked (`sockets_in(..., pyroute2=True)`), else on first use, which must
    then be from a thread in the same netns (the agent's own handle only)."""

    rtnl: Rtnl
    ioctl_sock: socket.socket
    _ipr: IPRoute | None = None

    @property
    def ipr(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = IPRoute()
        return self._ipr

    def close(self) -> None:
        self.rtnl.close()
        self.ioctl_sock.close()
        if self._ipr is not None:
            self._ipr.close()


def _open_handle(pyroute2: bool) -> NetnsHandle:
    return NetnsHandle(Rtnl(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
                       IPRoute() if pyroute2 else None)


def disable_ipv6(device: str) -> None:
    """net.ipv6.conf.<device>.disable_ipv6 = 1 in the calling thread's netns (`default`: for
    the devices created in it from now on); nothing if the kernel has no IPv6."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{device}/disable_ipv6", "w") as knob:
            knob.write("1")
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def sockets_in(netns_fd: int | None = None, ipv4_only: bool = False,
               pyroute2: bool = False) -> Iterator[NetnsHandle]:
    """A NetnsHandle for the netns `netns_fd` (None: the agent's own netns), closed after.
    `ipv4_only`: the devices created in that netns from now on start without IPv6."""
    if netns_fd is None:
        handle = _open_handle(pyroute2)
    else:
        with thread_in_netns(netns_fd):
            if ipv4_only:
                disable_ipv6("default")
            handle = _open_handle(pyroute2)
    try:
        yield handle
    finally:
        handle.close()


_host: NetnsHandle | None = None
_host_lock = threading.Lock()


@contextlib.contextmanager
def host_sockets() -> Iterator[NetnsHandle]:
    """The agent's own netns handle: opened once, then shared by every ADD and DEL, one
    at a time. Must first be used from a thread in the agent's netns, as every CNI request
    thread is. A handle that failed at the socket level is reopened next time."""
    global _host
    with _host_lock:
        if _host is None:
            _host = _open_handle(pyroute2=False)
        try:
            yield _host
        except OSError as exc:
            if not isinstance(exc, NetlinkError | RtnlError):
                _host.close()
                _host = None
            raise


def _ethtool(sock: socket.socket, ifname: str, cmd: int, data: int = 0) -> int:
    value = ctypes.create_string_buffer(struct.pack("II", cmd, data))
    ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(value)).ljust(40, b"\0")
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    return struct.unpack("II", value.raw[:8])[1]


def tx_checksum_off(handle: NetnsHandle, ifname: str) -> None:
    """`ethtool -K <ifname> tx off` through the ioctl (a device without the offload: fine)."""
    try:
        _ethtool(handle.ioctl_sock, ifname, ETHTOOL_STXCSUM, 0)
    except OSError as exc:
        if exc.errno != errno.EOPNOTSUPP:
            raise PlumbingError(f"cannot turn tx checksum offload off on {ifname}: "
                                f"{exc}") from exc


def tx_checksum_on(handle: NetnsHandle, ifname: str) -> bool:
    """Whether tx checksum offload is on (ETHTOOL_GTXCSUM)."""
    return bool(_ethtool(handle.ioctl_sock, ifname, ETHTOOL_GTXCSUM))


def link_index(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def delete_link(ifname: str) -> bool:
    """Delete link `ifname` in the agent's netns if it is there; True if it was."""
    with host_sockets() as host:
        return _delete_link(host, ifname)


def _delete_link(host: NetnsHandle, ifname: str) -> bool:
    try:
        return host.rtnl.delete_link(ifname)
    except RtnlError as exc:
        raise PlumbingError(f"cannot delete {ifname}: {exc}") from exc


def _ifreq(handle: NetnsHandle, request: int, ifname: str, family: int = 0) -> bytes | None:
    """One SIOCGIF* ioctl on `ifname` in the handle's netns (no netlink dump of every
    link); the answered struct ifreq, or None if there is no such link or address."""
    ifreq = struct.pack("16sH", ifname.encode(), family).ljust(40, b"\0")
    try:
        return fcntl.ioctl(handle.ioctl_sock.fileno(), request, ifreq)
    except OSError as exc:
        if exc.errno in (errno.ENODEV, errno.EADDRNOTAVAIL):
            return None
        raise


def if_index(handle: NetnsHandle, ifname: str) -> int | None:
    """The index of link `ifname` in the handle's netns."""
    answer = _ifreq(handle, SIOCGIFINDEX, ifname)
    return None if answer is None else int(struct.unpack_from("i", answer, 16)[0])


def primary_ipv4(handle: NetnsHandle, ifname: str) -> str | None:
    """The primary IPv4 address of `ifname` with its prefix ("100.64.0.2/16"); None if the
    link or the address is missing."""
    address = _ifreq(handle, SIOCGIFADDR, ifname, socket.AF_INET)
    netmask = _ifreq(handle, SIOCGIFNETMASK, ifname, socket.AF_INET)
    if address is None or netmask is None:
        return None
    return str(ipaddress.ip_interface(f"{socket.inet_ntoa(address[20:24])}/"
                                      f"{socket.inet_ntoa(netmask[20:24])}"))


def link_exists(ifname: str) -> bool:
    with host_sockets() as host:
        return if_index(host, ifname) is not None


def link_mac(ipr: IPRoute, index: int) -> str:
    return str(ipr.get_links(index)[0].get("IFLA_ADDRESS"))


@dataclass(frozen=True)
class PodInterface:
    """What goes into the pod: its interface and how it routes."""

    ifname: str
    mac: str
    ip: str  # "10.16.0.5/16"
    gateway: str
    mtu: int
    routes: tuple[tuple[str, str], ...] = ()  # (destination, next hop), default route first


def plumb(netns_path: str, host_ifname: str, pod: PodInterface,
          tx_off: bool = True) -> str:
    """Create the veth pair, the pod end inside the netns configured; return the host MAC.

    A leftover host end of the same name (an earlier, interrupted ADD) is deleted first;
    its pod end goes with it.

    Every change of any link in the node's netns makes ovs-vswitchd reconfigure all its
    bridges (its if_notifier), work that grows with the ports it has: at 150 ports each
    such event cost it ~17 ms of CPU. So the host end is created as ovs-vswitchd will want
    it: up, with its MAC, and promiscuous, which ovs-vswitchd otherwise sets itself when it
    adds the port and clears when it removes it (two more events per pod), and its tx
    offloads are left alone (one more). What is left is its creation and its carrier when
    the pod end goes up (a veth's peer cannot be created up: the kernel opens it before the
    pair is linked).

    The host end gets no IPv6, before it has a carrier: it is a port of br-int, with no
    address of any family, but with IPv6 the node's kernel would give it a link-local
    address and three routes, and every route change makes ovs-vswitchd dump the node's
    routing table again and look up the name of each route's device (one socket, ioctl
    and close per route: 1,000 syscalls per port added at 100 pods). That was a third of
    ovs-vswitchd's CPU per pod.

    A pod without an IPv6 address gets no IPv6 on its end: otherwise its kernel, once the
    link is up, sends neighbour and router solicitations and MLD reports into ovs-vswitchd
    (upcalls, datapath flows and OVN pipeline work for every pod, for nothing).
    """
    ipv4_only = ":" not in pod.ip and not any(":" in dst for dst, _ in pod.routes)
    netns_fd = open_netns(netns_path)
    try:
        with sockets_in(netns_fd, ipv4_only) as inside:
            with host_sockets() as host:
                _delete_link(host, host_ifname)
                host_mac = random_mac()
                try:
                    host.rtnl.add_veth(host_ifname, host_mac, pod.mtu, pod.ifname, pod.mac,
                                       netns_fd, up=True, promisc=True)
                except RtnlError as exc:
                    if exc.code == errno.EEXIST:  # not the host end: deleted just above
                        raise PlumbingError(f"{pod.ifname} already exists in "
                                            f"{netns_path}") from exc
                    raise PlumbingError(f"cannot create veth {host_ifname}/{pod.ifname}: "
                                        f"{exc}") from exc
            try:
                disable_ipv6(host_ifname)  # no carrier yet: the pod end is still down
                pod_index = if_index(inside, pod.ifname)
                if pod_index is None:
                    raise PlumbingError(f"veth {host_ifname}/{pod.ifname} vanished")
                _configure_pod_end(inside, pod_index, pod, tx_off)
                return host_mac
            except (PlumbingError, OSError, ValueError) as exc:
                with contextlib.suppress(PlumbingError, OSError):
                    delete_link(host_ifname)
                if isinstance(exc, PlumbingError):
                    raise
                raise PlumbingError(f"cannot configure {pod.ifname} in {netns_path}: "
                                    f"{exc}") from exc
    finally:
        os.close(netns_fd)


def _configure_pod_end(inside: NetnsHandle, index: int, pod: PodInterface,
                       tx_off: bool) -> None:
    rtnl = inside.rtnl
    if tx_off:
        tx_checksum_off(inside, pod.ifname)
    rtnl.add_address(index, pod.ip)
    rtnl.set_up(index)
    rtnl.set_up(LOOPBACK_IFINDEX)
    for dst, via in pod.routes:
        rtnl.replace_route(dst, via, index)


@dataclass(frozen=True)
class PodLinkState:
    """What CHECK compares with the previous result."""

    mac: str
    mtu: int
    up: bool
    addresses: tuple[str, ...]  # "10.16.0.5/16"
    gateways: tuple[str, ...]  # next hops of default routes via this link


def inspect_pod_link(netns_path: str, ifname: str) -> PodLinkState | None:
    """The pod end as the kernel has it; None if there is no such interface."""
    netns_fd = open_netns(netns_path)
    try:
        with sockets_in(netns_fd, pyroute2=True) as inside:
            index = link_index(inside.ipr, ifname)
            if index is None:
                return None
            link = inside.ipr.get_links(index)[0]
            addresses = tuple(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
                              for a in inside.ipr.get_addr(index=index))
            gateways = tuple(str(r.get("RTA_GATEWAY")) for r in inside.ipr.get_default_routes()
                             if r.get("RTA_OIF") == index and r.get("RTA_GATEWAY"))
            return PodLinkState(mac=str(link.get("IFLA_ADDRESS")), mtu=int(link.get("IFLA_MTU")),
                                up=link.get("state") == "up", addresses=addresses,
                                gateways=gateways)
    finally:
        os.close(netns_fd)


def sync_link_routes(ifname: str, gateway: str, destinations: Sequence[str]) -> tuple[int, int]:
    """Make the routes via `gateway` on `ifname` exactly `destinations`; (added, removed)."""
    with host_sockets() as host:
        index = link_index(host.ipr, ifname)
        if index is None:
            raise PlumbingError(f"{ifname} does not exist")
        wanted = {str(ipaddress.ip_network(d, strict=False)) for d in destinations}
        present = set()
        for route in host.ipr.get_routes(oif=index, family=socket.AF_INET):
            if route.get("RTA_GATEWAY") != gateway or route.get("RTA_DST") is None:
                continue
            present.add(f"{route.get('RTA_DST')}/{route['dst_len']}")
        for dst in sorted(present - wanted):
            host.ipr.route("del", dst=dst, gateway=gateway, oif=index)
        for dst in sorted(wanted - present):
            host.ipr.route("replace", dst=dst, gateway=gateway, oif=index)
        return len(wanted - present), len(present - wanted)
