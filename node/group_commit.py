"""Group commit: the port changes of concurrent ADDs and DELs in one OVSDB transaction.

ovs-vswitchd reconfigures once per change of its database, and each reconfiguration walks
every port of the bridge (netlink requests per port, then a revalidation), so a node adding
its pods' ports one transaction each pays O(pods) per pod. Measured on the sandbox, 30 ports
added to a netdev bridge cost ovs-vswitchd 0.65 s of CPU one transaction each, 0.06 s in one.

A single committer thread takes every request waiting when it comes round and commits them
together; while that transaction is in flight the next requests queue up. An idle node
therefore commits a lone ADD at once (no batching window, no added latency), and a burst
batches by itself. If a batch is refused, each of its requests is retried alone, so one bad
request fails only its own ADD or DEL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

LOG = logging.getLogger(__name__)
Commit = Callable[[Sequence[Any]], None]
"""Runs commands in one transaction; raises (an OvsError) if the database refuses it."""


class GroupCommit:
    def __init__(self, commit: Commit, max_batch: int = 128,
                 final: tuple[type[Exception], ...] = ()) -> None:
        self._commit = commit
        self._final = final
        """Errors not retried request by request (a timeout: the batch may still land)."""
        self._max_batch = max_batch
        self._pending: list[tuple[Sequence[Any], Future[None]]] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.batches = 0
        """Transactions committed (a batch retried request by request counts each)."""
        self.requests = 0

    def submit(self, commands: Sequence[Any]) -> None:
        """Commit `commands` (in one transaction with whatever else is waiting); return once
        committed, or raise what the commit raised for these commands alone."""
        done: Future[None] = Future()
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kovn-ovs-commit",
                                                daemon=True)
                self._thread.start()
            self._pending.append((commands, done))
            self._cond.notify()
        done.result()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                batch = self._pending[:self._max_batch]
                del self._pending[:self._max_batch]
            self._commit_batch(batch)

    def _commit_batch(self, batch: list[tuple[Sequence[Any], Future[None]]]) -> None:
        self.requests += len(batch)
        try:
            self.batches += 1
            self._commit([command for commands, _ in batch for command in commands])
        except Exception as exc:  # each request gets its own verdict below
            if len(batch) == 1 or isinstance(exc, self._final):
                for _, done in batch:
                    done.set_exception(exc)
                return
            LOG.info("a batch of %d port changes was refused (%s); committing them one by "
                     "one", len(batch), exc)
            for commands, done in batch:
                try:
                    self.batches += 1
                    self._commit(commands)
                except Exception as one:  # handed to the waiting request
                    done.set_exception(one)
                else:
                    done.set_result(None)
            return
        for _, done in batch:
            done.set_result(None)
