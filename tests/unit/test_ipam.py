"""controller.ipam: excludeIps parsing, sequential allocation, static IPs, restore, set_pool."""

from __future__ import annotations

import ipaddress
import random
import time

import pytest

from controller.ipam import (
    IPAM,
    Conflict,
    Exhausted,
    IPAMError,
    OutOfRange,
    Pool,
    merge_ranges,
    parse_excludes,
)


def n(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def small(excludes: tuple[str, ...] = ()) -> Pool:
    """10.0.0.0/29: hosts .1-.6, gateway .1, so .2-.6 can be handed out."""
    return Pool("small", "10.0.0.0/29", "10.0.0.1", excludes)


# --- excludeIps ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([], []),
        (["10.16.0.5"], [("10.16.0.5", "10.16.0.5")]),
        (["10.16.0.10..10.16.0.20"], [("10.16.0.10", "10.16.0.20")]),
        ([" 10.16.0.10 .. 10.16.0.20 "], [("10.16.0.10", "10.16.0.20")]),
        (["10.16.0.10..10.16.0.10"], [("10.16.0.10", "10.16.0.10")]),
        # overlapping ranges merge
        (["10.16.0.10..10.16.0.20", "10.16.0.15..10.16.0.30"], [("10.16.0.10", "10.16.0.30")]),
        # a range inside another disappears into it
        (["10.16.0.10..10.16.0.30", "10.16.0.15..10.16.0.20"], [("10.16.0.10", "10.16.0.30")]),
        # adjacent ranges and single IPs merge
        (["10.16.0.10..10.16.0.20", "10.16.0.21"], [("10.16.0.10", "10.16.0.21")]),
        (["10.16.0.3", "10.16.0.2", "10.16.0.4"], [("10.16.0.2", "10.16.0.4")]),
        # disjoint ones stay apart, sorted
        (["10.16.0.50", "10.16.0.10..10.16.0.20"],
         [("10.16.0.10", "10.16.0.20"), ("10.16.0.50", "10.16.0.50")]),
        # duplicates
        (["10.16.0.7", "10.16.0.7"], [("10.16.0.7", "10.16.0.7")]),
    ],
)
def test_parse_excludes(items: list[str], expected: list[tuple[str, str]]) -> None:
    assert parse_excludes(items) == [(n(lo), n(hi)) for lo, hi in expected]


@pytest.mark.parametrize(
    "items",
    [
        ["10.16.0.20..10.16.0.10"],  # ends before it starts
        ["10.16.0.300"],
        ["not-an-ip"],
        ["10.16.0.1..nope"],
        ["fd00::1"],
        ["10.16.0.0/24"],
    ],
)
def test_parse_excludes_rejects(items: list[str]) -> None:
    with pytest.raises(ValueError):
        parse_excludes(items)


def test_parse_excludes_names_the_reversed_range() -> None:
    with pytest.raises(ValueError, match=r"10\.16\.0\.20\.\.10\.16\.0\.10"):
        parse_excludes(["10.16.0.20..10.16.0.10"])


@pytest.mark.parametrize(
    ("ranges", "expected"),
    [
        ([], []),
        ([(5, 5)], [(5, 5)]),
        ([(1, 3), (4, 6)], [(1, 6)]),
        ([(1, 3), (5, 6)], [(1, 3), (5, 6)]),
        ([(5, 9), (1, 2), (2, 6)], [(1, 9)]),
        ([(1, 10), (2, 3)], [(1, 10)]),
    ],
)
def test_merge_ranges(ranges: list[tuple[int, int]], expected: list[tuple[int, int]]) -> None:
    assert merge_ranges(ranges) == expected


# --- sequential allocation -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cidr", "gateway", "excludes", "expected"),
    [
        # network .0 and gateway .1 are skipped
        ("10.16.0.0/16", "10.16.0.1", (), ["10.16.0.2", "10.16.0.3", "10.16.0.4"]),
        # a gateway that is not the first address: .1 is handed out, the gateway is not
        ("10.16.0.0/24", "10.16.0.3", (), ["10.16.0.1", "10.16.0.2", "10.16.0.4"]),
        # a single excluded address
        ("10.16.0.0/16", "10.16.0.1", ("10.16.0.3",), ["10.16.0.2", "10.16.0.4", "10.16.0.5"]),
        # a range
        ("10.16.0.0/16", "10.16.0.1", ("10.16.0.2..10.16.0.9",),
         ["10.16.0.10", "10.16.0.11", "10.16.0.12"]),
        # overlapping ranges, given in any order
        ("10.16.0.0/16", "10.16.0.1", ("10.16.0.5..10.16.0.8", "10.16.0.2..10.16.0.6"),
         ["10.16.0.9", "10.16.0.10", "10.16.0.11"]),
        # several disjoint ranges and singles
        ("10.16.0.0/16", "10.16.0.1", ("10.16.0.3", "10.16.0.5..10.16.0.6", "10.16.0.8"),
         ["10.16.0.2", "10.16.0.4", "10.16.0.7", "10.16.0.9"]),
        # crossing an octet boundary
        ("10.16.0.0/16", "10.16.0.1", ("10.16.0.2..10.16.0.254",),
         ["10.16.0.255", "10.16.1.0", "10.16.1.1"]),
    ],
)
def test_sequential_allocation(cidr: str, gateway: str, excludes: tuple[str, ...],
                               expected: list[str]) -> None:
    pool = Pool("s", cidr, gateway, excludes)
    got = [pool.allocate(f"ns/pod{i}") for i in range(len(expected))]
    assert got == expected
    assert pool.owners() == {f"ns/pod{i}": ip for i, ip in enumerate(expected)}


def test_broadcast_is_never_handed_out() -> None:
    pool = small()
    got = [pool.allocate(f"p{i}") for i in range(5)]
    assert got == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    with pytest.raises(Exhausted):
        pool.allocate("p5")
    assert "10.0.0.7" not in got and "10.0.0.0" not in got and "10.0.0.1" not in got


@pytest.mark.parametrize(
    ("cidr", "gateway", "excludes", "size"),
    [
        ("10.16.0.0/16", "10.16.0.1", (), 65533),
        ("10.16.0.0/24", "10.16.0.1", (), 253),
        ("10.0.0.0/30", "10.0.0.1", (), 1),
        ("10.0.0.0/29", "10.0.0.1", (), 5),
        ("10.16.0.0/24", "10.16.0.1", ("10.16.0.10..10.16.0.19",), 243),
        # the gateway inside an excluded range is not subtracted twice
        ("10.16.0.0/24", "10.16.0.1", ("10.16.0.1..10.16.0.10",), 244),
        # overlapping excludes are not subtracted twice
        ("10.16.0.0/24", "10.16.0.1", ("10.16.0.10..10.16.0.19", "10.16.0.15..10.16.0.24"), 238),
        # excludes covering network/broadcast only subtract the usable part
        ("10.16.0.0/24", "10.16.0.1", ("10.16.0.0", "10.16.0.255"), 253),
        ("10.16.0.0/24", "10.16.0.1", ("10.16.0.250..10.16.0.255",), 248),
        # everything excluded
        ("10.0.0.0/29", "10.0.0.1", ("10.0.0.0..10.0.0.7",), 0),
    ],
)
def test_size(cidr: str, gateway: str, excludes: tuple[str, ...], size: int) -> None:
    pool = Pool("s", cidr, gateway, excludes)
    assert pool.size == size
    assert pool.used == 0
    assert pool.available == size


def test_counts_follow_allocations() -> None:
    pool = Pool("s", "10.16.0.0/24", "10.16.0.1", ["10.16.0.100..10.16.0.109"])
    assert (pool.size, pool.used, pool.available) == (243, 0, 243)
    for i in range(10):
        pool.allocate(f"p{i}")
    pool.allocate("static", "10.16.0.200")
    assert (pool.size, pool.used, pool.available) == (243, 11, 232)
    pool.release("p3")
    pool.release("static")
    pool.release("nobody")
    assert (pool.size, pool.used, pool.available) == (243, 9, 234)


def test_exhaustion_message_helps() -> None:
    pool = Pool("tiny", "10.0.0.0/30", "10.0.0.1")
    assert pool.allocate("a") == "10.0.0.2"
    with pytest.raises(Exhausted) as err:
        pool.allocate("b")
    message = str(err.value)
    assert "tiny" in message
    assert "10.0.0.0/30" in message
    assert "1 in use" in message
    assert "no free address" in message
    assert "subnet" in message  # says what to do: enlarge/add a subnet or delete pods
    assert pool.ip_of("b") is None
    assert pool.used == 1 and pool.available == 0


def test_exhausted_when_everything_is_excluded() -> None:
    pool = small(("10.0.0.2..10.0.0.6",))
    with pytest.raises(Exhausted):
        pool.allocate("a")


def test_errors_are_ipam_errors() -> None:
    for cls in (Exhausted, Conflict, OutOfRange):
        assert issubclass(cls, IPAMError)


def test_release_then_reuse() -> None:
    pool = Pool("tiny", "10.0.0.0/30", "10.0.0.1")
    assert pool.allocate("a") == "10.0.0.2"
    assert pool.release("a") == "10.0.0.2"
    assert pool.ip_of("a") is None
    assert pool.owner_of("10.0.0.2") is None
    assert pool.allocate("b") == "10.0.0.2"
    assert pool.owner_of("10.0.0.2") == "b"


def test_release_unknown_owner_is_a_no_op() -> None:
    pool = small()
    pool.allocate("a")
    assert pool.release("ghost") is None
    assert pool.owners() == {"a": "10.0.0.2"}


def test_allocate_is_idempotent_per_owner() -> None:
    pool = small()
    first = pool.allocate("ns/a")
    assert pool.allocate("ns/a") == first
    assert pool.allocate("ns/a") == first
    assert pool.used == 1
    assert pool.allocate("ns/b") != first


def test_cursor_wraps_around_to_freed_addresses() -> None:
    pool = small()
    ips = {f"p{i}": pool.allocate(f"p{i}") for i in range(5)}  # .2 .. .6, cursor past the end
    pool.release("p1")  # .3
    assert pool.allocate("q1") == "10.0.0.3"
    pool.release("p0")  # .2
    pool.release("p3")  # .5
    got = {pool.allocate("q2"), pool.allocate("q3")}
    assert got == {ips["p0"], ips["p3"]}
    with pytest.raises(Exhausted):
        pool.allocate("q4")


def test_cursor_does_not_hand_back_a_just_released_address_first() -> None:
    """Walking forward spreads reuse: a freed address is not reused while fresh ones remain."""
    pool = Pool("s", "10.16.0.0/24", "10.16.0.1")
    assert pool.allocate("a") == "10.16.0.2"
    pool.release("a")
    assert pool.allocate("b") == "10.16.0.3"


# --- static addresses ----------------------------------------------------------------------------
def test_static_ip_is_honoured() -> None:
    pool = Pool("s", "10.16.0.0/16", "10.16.0.1")
    assert pool.allocate("ns/a", "10.16.5.5") == "10.16.5.5"
    assert pool.owner_of("10.16.5.5") == "ns/a"
    assert pool.ip_of("ns/a") == "10.16.5.5"
    # idempotent
    assert pool.allocate("ns/a", "10.16.5.5") == "10.16.5.5"
    # dynamic allocation for the same owner keeps the static address
    assert pool.allocate("ns/a") == "10.16.5.5"
    assert pool.used == 1


def test_static_ip_is_skipped_by_sequential_allocation() -> None:
    pool = Pool("s", "10.16.0.0/16", "10.16.0.1")
    pool.allocate("static", "10.16.0.3")
    assert [pool.allocate(o) for o in ("a", "b", "c")] == ["10.16.0.2", "10.16.0.4", "10.16.0.5"]


def test_static_ip_moves_an_owner() -> None:
    pool = small()
    assert pool.allocate("a") == "10.0.0.2"
    assert pool.allocate("a", "10.0.0.5") == "10.0.0.5"
    assert pool.owner_of("10.0.0.2") is None
    assert pool.owners() == {"a": "10.0.0.5"}


@pytest.mark.parametrize(
    ("requested", "error", "words"),
    [
        ("10.0.0.3", Conflict, ["10.0.0.3", "already used by other"]),  # held by another owner
        ("10.0.0.1", Conflict, ["10.0.0.1", "gateway"]),
        ("10.0.0.4", Conflict, ["10.0.0.4", "excludeIps"]),
        ("10.0.0.0", OutOfRange, ["10.0.0.0", "outside"]),  # network address
        ("10.0.0.7", OutOfRange, ["10.0.0.7", "outside"]),  # broadcast
        ("10.0.1.2", OutOfRange, ["10.0.1.2", "outside", "10.0.0.0/29"]),
        ("192.0.2.1", OutOfRange, ["192.0.2.1", "outside"]),
    ],
)
def test_static_ip_refused(requested: str, error: type[IPAMError], words: list[str]) -> None:
    pool = small(("10.0.0.4",))
    pool.allocate("other", "10.0.0.3")
    pool.allocate("me")  # .2
    with pytest.raises(error) as err:
        pool.allocate("me", requested)
    for word in words:
        assert word in str(err.value)
    # a refused request changes nothing
    assert pool.owners() == {"other": "10.0.0.3", "me": "10.0.0.2"}


def test_static_ip_not_an_address() -> None:
    pool = small()
    with pytest.raises(ValueError):
        pool.allocate("a", "10.0.0.x")


# --- restore -------------------------------------------------------------------------------------
def test_restore_from_annotations() -> None:
    pool = Pool("s", "10.16.0.0/16", "10.16.0.1")
    records = {"ns/a": "10.16.0.2", "ns/b": "10.16.0.4", "ns/c": "10.16.9.9"}
    for owner, ip in records.items():
        pool.restore(owner, ip)
    assert pool.owners() == records
    assert pool.used == 3
    # new pods get addresses no restored pod holds
    fresh = [pool.allocate(f"new/{i}") for i in range(3)]
    assert fresh == ["10.16.0.3", "10.16.0.5", "10.16.0.6"]
    # restoring again is idempotent
    pool.restore("ns/a", "10.16.0.2")
    assert pool.ip_of("ns/a") == "10.16.0.2"
    assert pool.used == 6


def test_restore_conflict_two_owners_same_ip() -> None:
    pool = Pool("s", "10.16.0.0/16", "10.16.0.1")
    pool.restore("ns/a", "10.16.0.7")
    with pytest.raises(Conflict) as err:
        pool.restore("ns/b", "10.16.0.7")
    assert "ns/a" in str(err.value) and "ns/b" in str(err.value)
    assert pool.owners() == {"ns/a": "10.16.0.7"}


def test_restore_moves_an_owner() -> None:
    pool = Pool("s", "10.16.0.0/16", "10.16.0.1")
    pool.restore("ns/a", "10.16.0.7")
    pool.restore("ns/a", "10.16.0.8")
    assert pool.owners() == {"ns/a": "10.16.0.8"}
    assert pool.owner_of("10.16.0.7") is None


@pytest.mark.parametrize("ip", ["10.16.0.0", "10.16.255.255", "10.17.0.5"])
def test_restore_outside(ip: str) -> None:
    pool = Pool("s", "10.16.0.0/16", "10.16.0.1")
    with pytest.raises(OutOfRange):
        pool.restore("ns/a", ip)
    assert pool.used == 0


def test_restore_accepts_an_excluded_address() -> None:
    """It was valid when handed out: excluding it later does not take it from its pod."""
    pool = Pool("s", "10.16.0.0/24", "10.16.0.1", ["10.16.0.10..10.16.0.20"])
    pool.restore("ns/a", "10.16.0.15")
    assert pool.ip_of("ns/a") == "10.16.0.15"
    assert pool.used == 1
    assert pool.available == pool.size  # the excluded address is not counted as available


def test_restore_refuses_the_gateway() -> None:
    """The gateway belongs to the router port: a pod recorded with it cannot keep it."""
    pool = Pool("s", "10.16.0.0/24", "10.16.0.1")
    with pytest.raises(Conflict):
        pool.restore("ns/a", "10.16.0.1")
    assert pool.used == 0


# --- IPAM: several pools -------------------------------------------------------------------------
def test_pool_lookup_and_unknown_pool() -> None:
    ipam = IPAM()
    pool = ipam.set_pool("a", "10.16.0.0/16", "10.16.0.1")
    assert ipam.pool("a") is pool
    with pytest.raises(IPAMError, match="subnet nope is not known"):
        ipam.pool("nope")


def test_lookup_and_release_across_pools() -> None:
    ipam = IPAM()
    ipam.set_pool("a", "10.16.0.0/16", "10.16.0.1")
    ipam.set_pool("b", "10.17.0.0/16", "10.17.0.1")
    ipam.set_pool("join", "100.64.0.0/16", "100.64.0.1")
    ipam.pool("a").allocate("ns/x")
    ipam.pool("b").allocate("ns/y")
    ipam.pool("join").allocate("node1")
    assert ipam.lookup("ns/x") == ("a", "10.16.0.2")
    assert ipam.lookup("ns/y") == ("b", "10.17.0.2")
    assert ipam.lookup("node1") == ("join", "100.64.0.2")
    assert ipam.lookup("ns/z") is None
    ipam.release("ns/y")
    assert ipam.lookup("ns/y") is None
    assert ipam.pool("b").used == 0
    assert ipam.lookup("ns/x") == ("a", "10.16.0.2")
    ipam.release("ns/ghost")  # no-op
    ipam.remove_pool("a")
    assert ipam.lookup("ns/x") is None
    ipam.remove_pool("a")  # no-op


def test_set_pool_unchanged_keeps_the_pool() -> None:
    ipam = IPAM()
    pool = ipam.set_pool("a", "10.16.0.0/16", "10.16.0.1", ["10.16.0.5"])
    pool.allocate("ns/x")
    again = ipam.set_pool("a", "10.16.0.0/16", "10.16.0.1", ("10.16.0.5",))
    assert again is pool
    assert again.ip_of("ns/x") == "10.16.0.2"
    # the cursor survives too: the next address follows on
    assert again.allocate("ns/y") == "10.16.0.3"


@pytest.mark.parametrize(
    ("cidr", "gateway", "excludes", "kept"),
    [
        # shrink: only what still fits is kept
        ("10.16.0.0/24", "10.16.0.1", (), {"ns/a", "ns/b"}),
        # grow: everything is kept
        ("10.16.0.0/15", "10.16.0.1", (), {"ns/a", "ns/b", "ns/far"}),
        # new excludes do not take addresses away (they were valid when handed out)
        ("10.16.0.0/16", "10.16.0.1", ("10.16.0.2..10.16.0.3",), {"ns/a", "ns/b", "ns/far"}),
        # a moved gateway drops the pod holding the new gateway address
        ("10.16.0.0/16", "10.16.0.2", (), {"ns/b", "ns/far"}),
        # a different range: nothing fits
        ("10.18.0.0/16", "10.18.0.1", (), set()),
    ],
)
def test_set_pool_redefinition(cidr: str, gateway: str, excludes: tuple[str, ...],
                               kept: set[str]) -> None:
    ipam = IPAM()
    old = ipam.set_pool("s", "10.16.0.0/16", "10.16.0.1")
    old.allocate("ns/a")  # 10.16.0.2
    old.allocate("ns/b")  # 10.16.0.3
    old.allocate("ns/far", "10.16.9.9")
    before = old.owners()
    new = ipam.set_pool("s", cidr, gateway, excludes)
    assert new is not old
    assert ipam.pool("s") is new
    assert new.owners() == {o: ip for o, ip in before.items() if o in kept}
    assert new.network == ipaddress.IPv4Network(cidr)
    assert str(new.gateway) == gateway
    # dropped owners get a fresh address that does not collide with kept ones
    for owner in set(before) - kept:
        ip = new.allocate(owner)
        assert new.owner_of(ip) == owner
    assert len(set(new.owners().values())) == len(new.owners())


# --- properties ----------------------------------------------------------------------------------
def _check_invariants(pool: Pool, expected: dict[str, str]) -> None:
    owners = pool.owners()
    assert owners == expected
    assert len(set(owners.values())) == len(owners), "an address was given to two owners"
    for owner, ip in owners.items():
        assert pool.owner_of(ip) == owner
        assert pool.ip_of(owner) == ip
        value = ipaddress.IPv4Address(ip)
        assert value in pool.network
        assert value not in (pool.network.network_address, pool.network.broadcast_address)
        assert value != pool.gateway
        assert not pool.excluded(int(value))
    assert pool.used == len(owners)
    assert pool.available == pool.size - len(owners)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 42])
def test_random_operations_never_share_an_address(seed: int) -> None:
    rng = random.Random(seed)
    # /27 with excludes (23 usable addresses, 40 owners): exhaustion, wrap-around and
    # conflicts all happen many times
    pool = Pool("r", "10.16.0.0/27", "10.16.0.1", ["10.16.0.10..10.16.0.14", "10.16.0.20"])
    owners = [f"ns/p{i}" for i in range(40)]
    seen: set[str] = set()
    expected: dict[str, str] = {}
    for _ in range(2000):
        owner = rng.choice(owners)
        action = rng.random()
        if action < 0.45:
            try:
                ip = pool.allocate(owner)
            except Exhausted:
                assert owner not in expected
                assert pool.available == 0
                seen.add("exhausted")
            else:
                assert expected.setdefault(owner, ip) == ip
        elif action < 0.6:
            requested = str(ipaddress.IPv4Address(n("10.16.0.0") + rng.randrange(32)))
            holder = next((o for o, ip in expected.items() if ip == requested), None)
            try:
                got = pool.allocate(owner, requested)
            except (Conflict, OutOfRange) as exc:
                assert holder not in (None, owner) or pool.excluded(n(requested)) or \
                    requested in ("10.16.0.0", "10.16.0.31")
                seen.add(type(exc).__name__)
            else:
                assert got == requested
                assert holder in (None, owner)
                expected[owner] = requested
                seen.add("static")
        else:
            assert pool.release(owner) == expected.pop(owner, None)
        _check_invariants(pool, expected)
    assert seen == {"exhausted", "Conflict", "OutOfRange", "static"}


def test_allocating_60000_addresses_is_fast() -> None:
    pool = Pool("big", "10.16.0.0/16", "10.16.0.1", ["10.16.0.2..10.16.0.255"])
    started = time.perf_counter()
    ips = [pool.allocate(f"ns/pod-{i}") for i in range(60_000)]
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"60,000 allocations took {elapsed:.2f}s"
    assert len(set(ips)) == 60_000
    assert ips[0] == "10.16.1.0"
    assert pool.used == 60_000
    assert pool.available == pool.size - 60_000
