"""Network namespaces, veth pairs and root-namespace routes, via the `ip` command.

Plain `ip` calls keep every step copy-pastable into a shell when something has to be debugged
by hand (compare ../shared/sandbox-recipe.sh).
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait

from sandbox import resolvconf
from sandbox.procs import run


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """Run `ip [-n NETNS] ARGS...` and return its stdout."""
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    return run(argv, check=check).stdout


def netns_exec(
    netns: str, argv: list[str], timeout: float = 10, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run argv inside netns (text output captured); raise CalledProcessError only if check."""
    return subprocess.run(
        ["ip", "netns", "exec", netns, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def netns_list() -> list[str]:
    """Names of all named network namespaces."""
    out = run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    if not out:
        return []
    return [entry["name"] for entry in json.loads(out)]


def netns_add(name: str) -> None:
    """Create a netns with its loopback up (many tools misbehave with lo down)."""
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)


def netns_delete(name: str) -> bool:
    """Delete a netns if it exists; True if it did. Its veth ends vanish with it, and so do
    its /etc/netns files (a pod's resolv.conf)."""
    resolvconf.remove(name)
    if name not in netns_list():
        return False
    ip("netns", "delete", name)
    return True


def netns_pids(name: str) -> list[int]:
    """Pids of processes whose network namespace is `name`."""
    out = run(["ip", "netns", "pids", name], check=False).stdout
    return [int(tok) for tok in out.split()]


def sandbox_netns(prefix: str) -> list[str]:
    """Existing netns that belong to a sandbox with this prefix (nodes, underlay, outside,
    pods)."""
    pattern = re.compile(rf"^{re.escape(prefix)}-(node\d+|underlay|outside|p-.+)$")
    return [name for name in netns_list() if pattern.match(name)]


def veth(name: str, netns: str, peer: str, peer_netns: str, mtu: int | None = None) -> None:
    """Create a veth pair with each end directly in its netns, both up, tx offload off.

    The userspace datapath forwards packets with partial checksums as they are, so TCP
    breaks unless tx checksum offload is off on both ends.
    """
    ip("link", "add", name, "netns", netns, "type", "veth", "peer", "name", peer,
       "netns", peer_netns)
    for ns, dev in ((netns, name), (peer_netns, peer)):
        if mtu is not None:
            ip("link", "set", dev, "mtu", str(mtu), netns=ns)
        tx_off(ns, dev)
        ip("link", "set", dev, "up", netns=ns)


def tx_off(netns: str, dev: str) -> None:
    """Turn tx checksum offload off on dev (see `veth`)."""
    run(["ip", "netns", "exec", netns, "ethtool", "-K", dev, "tx", "off"])


def root_routes() -> list[dict]:
    """All IPv4 and IPv6 routes of the root namespace, every table, as `ip -j` dicts."""
    routes = []
    for family in ("-4", "-6"):
        out = run(["ip", "-j", family, "route", "show", "table", "all"], check=False)
        if out.stdout.strip():
            routes += json.loads(out.stdout)
    return routes


def _route_net(route: dict) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    dst = route.get("dst", "")
    if dst in ("", "default"):
        return None
    try:
        return ipaddress.ip_network(dst, strict=False)
    except ValueError:
        return None


def add_blackholes(ranges: Iterable[str]) -> tuple[list[str], list[str]]:
    """Add `blackhole` routes in the root namespace; return (added, warnings).

    While the sandbox is up, its addresses must never leave through the host's default
    route. A range that overlaps any existing route other than the default route (including
    an identical blackhole, e.g. another sandbox's) is skipped: the host already knows where
    it goes and we must not break that.
    """
    existing = [(r, net) for r in root_routes() if (net := _route_net(r)) is not None]
    known = known_hosts()
    added, warnings = [], []
    for cidr in ranges:
        net = ipaddress.ip_network(cidr, strict=False)
        used = next(((ip, name) for ip, name in known if ip in net), None)
        if used is not None:
            warnings.append(f"not blackholing {cidr}: this machine reaches {used[1]} at "
                            f"{used[0]}")
            continue
        clash = next((r for r, other in existing
                      if other.version == net.version and other.overlaps(net)), None)
        if clash is not None:
            how = f"{clash.get('type', '')} route {clash['dst']}".strip()
            dev = f" dev {clash['dev']}" if clash.get("dev") else ""
            warnings.append(f"not blackholing {cidr}: it overlaps the existing {how}{dev}")
            continue
        result = run(["ip", "route", "add", "blackhole", str(net)], check=False)
        if result.returncode != 0:
            warnings.append(f"not blackholing {cidr}: {result.stderr.strip()}")
            continue
        added.append(str(net))
    return added, warnings


PACKAGE_HOSTS = ("pypi.org", "files.pythonhosted.org", "deb.debian.org",
                 "security.debian.org", "proxy.golang.org", "sum.golang.org")


def known_hosts(names: Iterable[str] = PACKAGE_HOSTS,
                timeout: float = 2.0) -> list[tuple[ipaddress.IPv4Address, str]]:
    """Where this machine reaches its package mirrors. Documentation ranges are not always
    unused: here PyPI, Debian and the Go proxy answer at 203.0.113.80, and a blackhole over
    them would cut the machine off its packages while a sandbox is up."""

    def resolve(name: str) -> list[tuple[ipaddress.IPv4Address, str]]:
        try:
            infos = socket.getaddrinfo(name, 443, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            return []
        return [(ipaddress.IPv4Address(info[4][0]), name) for info in infos]

    pool = ThreadPoolExecutor(max_workers=len(tuple(names)) or 1)
    futures = [pool.submit(resolve, name) for name in names]
    done, _ = wait(futures, timeout=timeout)
    pool.shutdown(wait=False)
    return [pair for future in done for pair in future.result()]


def remove_blackholes(ranges: Iterable[str]) -> list[str]:
    """Remove the blackhole routes we added (only blackholes, only these ranges)."""
    removed = []
    for cidr in ranges:
        if run(["ip", "route", "del", "blackhole", cidr], check=False).returncode == 0:
            removed.append(f"removed blackhole route {cidr}")
    return removed
