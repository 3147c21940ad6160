"""IP address management: one pool per Subnet (and one for the join switch). Pure, no IO.

An owner (a pod `ns/name`, a node name) holds at most one address per pool. Allocation is
O(1) amortized: a cursor walks forward through the range and skips addresses in use or
excluded, so after a restart with 10,000 pods handing out the next address stays cheap.
The durable record is the pod annotation; `restore` rebuilds a pool from it and refuses to
give one address to two owners.
"""

from __future__ import annotations

import bisect
import contextlib
import ipaddress
from collections.abc import Iterable


class IPAMError(Exception):
    """An allocation that cannot be made; the message says why and what to do."""


class Exhausted(IPAMError):
    pass


class Conflict(IPAMError):
    pass


class OutOfRange(IPAMError):
    pass


def parse_excludes(items: Iterable[str]) -> list[tuple[int, int]]:
    """`excludeIps` entries ("10.16.0.5" or "10.16.0.10..10.16.0.20") as merged int ranges."""
    ranges: list[tuple[int, int]] = []
    for item in items:
        first, _, last = item.partition("..")
        lo = int(ipaddress.IPv4Address(first.strip()))
        hi = int(ipaddress.IPv4Address(last.strip())) if last else lo
        if hi < lo:
            raise ValueError(f"excludeIps range {item!r} ends before it starts")
        ranges.append((lo, hi))
    return merge_ranges(ranges)


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


class Pool:
    """The addresses of one subnet: network, gateway and excluded ranges are never handed out."""

    def __init__(self, name: str, cidr: str, gateway: str, excludes: Iterable[str] = ()) -> None:
        self.name = name
        self.network = ipaddress.IPv4Network(cidr)
        self.gateway = ipaddress.IPv4Address(gateway)
        self._first = int(self.network.network_address) + 1
        self._last = int(self.network.broadcast_address) - 1
        gateway_range = (int(self.gateway), int(self.gateway))
        self._excluded = merge_ranges([gateway_range, *parse_excludes(excludes)])
        self._starts = [lo for lo, _ in self._excluded]
        self._by_ip: dict[int, str] = {}
        self._by_owner: dict[str, int] = {}
        self._cursor = self._first
        self._excluded_in_use = 0
        """Held addresses inside excluded ranges (restored ones): `available` is O(1), as
        Subnet statuses read it after every flush."""

    # --- queries ---------------------------------------------------------------------------
    def excluded(self, ip: int) -> bool:
        i = bisect.bisect_right(self._starts, ip) - 1
        return i >= 0 and self._excluded[i][0] <= ip <= self._excluded[i][1]

    @property
    def size(self) -> int:
        """Addresses that can be handed out at all."""
        total = max(0, self._last - self._first + 1)
        for lo, hi in self._excluded:
            lo, hi = max(lo, self._first), min(hi, self._last)
            if lo <= hi:
                total -= hi - lo + 1
        return total

    @property
    def used(self) -> int:
        return len(self._by_owner)

    @property
    def available(self) -> int:
        return max(0, self.size - (len(self._by_ip) - self._excluded_in_use))

    def ip_of(self, owner: str) -> str | None:
        ip = self._by_owner.get(owner)
        return None if ip is None else str(ipaddress.IPv4Address(ip))

    def owner_of(self, ip: str) -> str | None:
        return self._by_ip.get(int(ipaddress.IPv4Address(ip)))

    def owners(self) -> dict[str, str]:
        return {o: str(ipaddress.IPv4Address(ip)) for o, ip in self._by_owner.items()}

    def owner_keys(self) -> list[str]:
        """Who holds an address (without formatting 5,000 addresses to say so)."""
        return list(self._by_owner)

    # --- changes ---------------------------------------------------------------------------
    def _check_static(self, owner: str, value: int, text: str) -> None:
        if not self._first <= value <= self._last:
            raise OutOfRange(f"{text} is outside subnet {self.name} ({self.network}): pick an "
                             "address inside it or another subnet")
        if value == int(self.gateway):
            raise Conflict(f"{text} is the gateway of subnet {self.name}")
        holder = self._by_ip.get(value)
        if holder is not None and holder != owner:
            raise Conflict(f"{text} is already used by {holder} in subnet {self.name}")

    def allocate(self, owner: str, requested: str | None = None) -> str:
        """The owner's address: the one it holds, the requested one, or the next free one."""
        held = self._by_owner.get(owner)
        if requested is not None:
            value = int(ipaddress.IPv4Address(requested))
            if held == value:
                return requested
            self._check_static(owner, value, requested)
            if self.excluded(value):
                raise Conflict(f"{requested} is in excludeIps of subnet {self.name}")
            self.release(owner)
            self._take(owner, value)
            return requested
        if held is not None:
            return str(ipaddress.IPv4Address(held))
        span = self._last - self._first + 1
        candidate = self._cursor
        for _ in range(max(span, 0)):
            if candidate > self._last:
                candidate = self._first
            if candidate not in self._by_ip and not self.excluded(candidate):
                self._take(owner, candidate)
                self._cursor = candidate + 1
                return str(ipaddress.IPv4Address(candidate))
            candidate += 1
        raise Exhausted(f"subnet {self.name} ({self.network}) has no free address left "
                        f"({self.used} in use): delete pods or enlarge/add a subnet")

    def restore(self, owner: str, ip: str) -> None:
        """Re-take an address recorded in an annotation (on start). Excluded addresses are
        accepted: they were valid when handed out; only a second owner is refused, and the
        gateway, which the router port owns."""
        value = int(ipaddress.IPv4Address(ip))
        if not self._first <= value <= self._last:
            raise OutOfRange(f"{ip} recorded for {owner} is outside subnet {self.name}")
        if value == int(self.gateway):
            raise Conflict(f"{ip} recorded for {owner} is the gateway of subnet {self.name}")
        holder = self._by_ip.get(value)
        if holder is not None and holder != owner:
            raise Conflict(f"{ip} is recorded for both {holder} and {owner}")
        self.release(owner)
        self._take(owner, value)

    def release(self, owner: str) -> str | None:
        value = self._by_owner.pop(owner, None)
        if value is None:
            return None
        del self._by_ip[value]
        self._excluded_in_use -= self.excluded(value)
        return str(ipaddress.IPv4Address(value))

    def _take(self, owner: str, value: int) -> None:
        self._by_owner[owner] = value
        self._by_ip[value] = owner
        self._excluded_in_use += self.excluded(value)


class IPAM:
    """All pools by subnet name."""

    def __init__(self) -> None:
        self.pools: dict[str, Pool] = {}

    def set_pool(self, name: str, cidr: str, gateway: str, excludes: Iterable[str] = ()) -> Pool:
        """Create or redefine a pool, keeping the allocations that still fit inside it."""
        old = self.pools.get(name)
        excludes = list(excludes)
        if old is not None and (str(old.network), str(old.gateway)) == (cidr, gateway) and \
                old._excluded == Pool(name, cidr, gateway, excludes)._excluded:
            return old
        pool = Pool(name, cidr, gateway, excludes)
        if old is not None:
            for owner, ip in old.owners().items():
                # An address that no longer fits is re-allocated by its owner's next reconcile.
                with contextlib.suppress(IPAMError):
                    pool.restore(owner, ip)
        self.pools[name] = pool
        return pool

    def remove_pool(self, name: str) -> None:
        self.pools.pop(name, None)

    def pool(self, name: str) -> Pool:
        try:
            return self.pools[name]
        except KeyError:
            raise IPAMError(f"subnet {name} is not known (yet): create it, or wait for it to "
                            "be validated") from None

    def release(self, owner: str) -> None:
        for pool in self.pools.values():
            pool.release(owner)

    def lookup(self, owner: str) -> tuple[str, str] | None:
        """(subnet, ip) the owner holds anywhere, or None."""
        for pool in self.pools.values():
            ip = pool.ip_of(owner)
            if ip is not None:
                return pool.name, ip
        return None
