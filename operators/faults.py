"""Fault isolation: an owner whose rows cannot be computed or written is set aside, alone.

A flush writes many owners in one NB transaction, and OVSDB takes a transaction whole or not
at all: one owner whose rows NB refuses (a name a hand-made row already has, a value outside
a column's constraints, a reference to a row that does not exist) would otherwise fail every
flush, forever, and with it the networking of every pod created after it. So when a
transaction is refused, `write_isolated` splits the owners in halves and writes each half
on its own, down to single owners: with k bad owners among n that costs about
2·k·log2(n) transactions, once, and every good owner commits. The bad ones are recorded in
`Faults`: an Event on their object, a log line per change of message, and a retry with
exponential backoff. Their previous rows in NB are left as they were (a scoped reconcile
never touches an owner it does not name).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from northbound.connection import NorthboundUnavailable
from northbound.rows import NbRow, Owner

LOG = logging.getLogger(__name__)
Write = Callable[[dict[Owner, tuple[NbRow, ...]]], None]


@dataclass
class Failure:
    message: str
    attempts: int
    retry_at: float


class Faults:
    """The owners set aside, and when each is tried again."""

    def __init__(self, base_delay: float = 1.0, max_delay: float = 60.0) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.failures: dict[Owner, Failure] = {}

    def get(self, owner: Owner) -> Failure | None:
        return self.failures.get(owner)

    def __contains__(self, owner: Owner) -> bool:
        return owner in self.failures

    def __len__(self) -> int:
        return len(self.failures)

    def failed(self, owner: Owner, message: str, now: float | None = None) -> Failure:
        """Record a failure; True in `changed` when the message is new (worth an Event)."""
        now = time.monotonic() if now is None else now
        previous = self.failures.get(owner)
        attempts = previous.attempts + 1 if previous else 1
        delay = min(self.max_delay, self.base_delay * 2 ** (attempts - 1))
        failure = Failure(message, attempts, now + delay)
        self.failures[owner] = failure
        if previous is None or previous.message != message:
            LOG.warning("%s set aside (retry in %.0fs): %s", owner, delay, message)
        return failure

    def succeeded(self, owner: Owner) -> bool:
        """Forget a failure; True when there was one."""
        if self.failures.pop(owner, None) is not None:
            LOG.info("%s recovered", owner)
            return True
        return False

    def due(self, now: float | None = None) -> list[Owner]:
        """Owners whose retry time has come (their retry time moves on: one retry each)."""
        now = time.monotonic() if now is None else now
        ready = [o for o, f in self.failures.items() if f.retry_at <= now]
        for owner in ready:
            failure = self.failures[owner]
            failure.retry_at = now + min(self.max_delay,
                                         self.base_delay * 2 ** failure.attempts)
        return ready


def write_isolated(write: Write, changed: dict[Owner, tuple[NbRow, ...]],
                   order: Sequence[Owner] | None = None) -> dict[Owner, str]:
    """Write `changed` (owner -> rows) with `write`; the owners that could not be written,
    with why. NB being unreachable is not an owner's fault: NorthboundUnavailable propagates.

    `order` puts containers before their contents (the cluster and subnets before pods), so
    a pod whose switch is created in the same flush lands in a later half than the switch;
    owners that fail alone are tried once more at the end, after every other half landed.
    """
    owners = list(order) if order is not None else list(changed)
    failed: dict[Owner, str] = {}

    def attempt(group: list[Owner]) -> None:
        try:
            write({o: changed[o] for o in group})
        except NorthboundUnavailable:
            raise
        except Exception as exc:
            if len(group) == 1:
                failed[group[0]] = _message(exc)
                return
            middle = len(group) // 2
            attempt(group[:middle])
            attempt(group[middle:])

    if owners:
        attempt(owners)
    for owner in [o for o in owners if o in failed]:
        try:
            write({owner: changed[owner]})
        except NorthboundUnavailable:
            raise
        except Exception as exc:
            failed[owner] = _message(exc)
        else:
            del failed[owner]
    return failed


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 600 else text[:600] + "..."
