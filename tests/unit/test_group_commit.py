"""GroupCommit: concurrent requests share transactions; a refused batch is retried request by
request, so only the bad request fails; a timeout is not retried (the batch may land)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from node.group_commit import GroupCommit


class Refused(RuntimeError):
    pass


class Late(RuntimeError):
    pass


class FakeDatabase:
    """Commits lists of strings; 'bad' in a transaction refuses all of it; 'late' times out.
    Each commit takes `delay` seconds, as a real round trip does."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.transactions: list[list[str]] = []
        self.lock = threading.Lock()

    def commit(self, commands: Sequence[Any]) -> None:
        time.sleep(self.delay)
        with self.lock:
            self.transactions.append(list(commands))
        if "late" in commands:
            raise Late("no answer")
        if "bad" in commands:
            raise Refused("constraint violation")


def test_a_lone_request_commits_at_once_in_its_own_transaction() -> None:
    db = FakeDatabase(delay=0.0)
    group = GroupCommit(db.commit)
    started = time.monotonic()
    group.submit(["add a"])
    assert time.monotonic() - started < 0.5
    assert db.transactions == [["add a"]]


def test_a_burst_shares_transactions() -> None:
    db = FakeDatabase()
    group = GroupCommit(db.commit)
    with ThreadPoolExecutor(50) as pool:
        list(pool.map(lambda i: group.submit([f"add {i}"]), range(50)))
    committed = [c for t in db.transactions for c in t]
    assert sorted(committed) == sorted(f"add {i}" for i in range(50))
    assert len(db.transactions) <= 10, db.transactions
    assert group.requests == 50 and group.batches == len(db.transactions)


def test_one_bad_request_fails_alone() -> None:
    db = FakeDatabase()
    group = GroupCommit(db.commit)
    gate = threading.Event()
    outcomes: dict[str, str] = {}

    def submit(name: str) -> None:
        gate.wait()
        try:
            group.submit([name])
            outcomes[name] = "ok"
        except Refused:
            outcomes[name] = "refused"

    group.submit(["warm up"])
    threads = [threading.Thread(target=submit, args=(n,)) for n in ("a", "bad", "b", "c")]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(5)
    assert outcomes == {"a": "ok", "b": "ok", "c": "ok", "bad": "refused"}
    landed = [c for t in db.transactions if "bad" not in t for c in t]
    assert sorted(landed) == ["a", "b", "c", "warm up"]


def test_a_final_error_is_not_retried_request_by_request() -> None:
    db = FakeDatabase(delay=0.05)
    group = GroupCommit(db.commit, final=(Late,))
    blocker = threading.Thread(target=group.submit, args=(["first"],))
    blocker.start()
    time.sleep(0.01)  # "first" is in flight: the next two queue up and share a batch
    errors: list[BaseException] = []

    def submit(name: str) -> None:
        try:
            group.submit([name])
        except Late as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(n,)) for n in ("late", "other")]
    for t in threads:
        t.start()
    for t in (*threads, blocker):
        t.join(5)
    assert len(errors) == 2
    assert ["late", "other"] in db.transactions or ["other", "late"] in db.transactions
    assert not any(t == ["other"] for t in db.transactions)


def test_errors_reach_the_submitter() -> None:
    group = GroupCommit(FakeDatabase(delay=0.0).commit)
    with pytest.raises(Refused):
        group.submit(["bad"])
    group.submit(["fine"])  # the committer thread lives on
