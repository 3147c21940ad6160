"""A keyed work queue on a thread pool, and a timer thread for delayed work.

Like client-go's workqueue: a key is handled by one worker at a time; adding a key that is
being handled runs the handler once more when it finishes (the handler always reads the
latest state, so coalescing adds loses nothing); delayed adds (retries with backoff, probe
periods) go through one timer thread instead of a thread or a sleeping worker each.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor

LOG = logging.getLogger("kovn.sandbox.workqueue")


class Timer:
    """Runs callables at given times on one thread; they must be quick (hand work off)."""

    def __init__(self, name: str = "timer") -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_later(self, delay: float, func: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._seq),
                                        func))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, func = heapq.heappop(self._heap)
            try:
                func()
            except Exception:
                LOG.exception("timer callback failed")


class WorkQueue:
    """handler(key) on a pool of `workers` threads, at most one call per key at a time."""

    def __init__(self, handler: Callable[[Hashable], None], workers: int, timer: Timer,
                 name: str = "worker") -> None:
        self._handler = handler
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
        self._timer = timer
        self._lock = threading.Lock()
        self._queued: set[Hashable] = set()  # submitted, not started
        self._active: set[Hashable] = set()  # being handled
        self._again: set[Hashable] = set()  # added while being handled

    def add(self, key: Hashable) -> None:
        with self._lock:
            if key in self._queued:
                return
            if key in self._active:
                self._again.add(key)
                return
            self._queued.add(key)
        self._pool.submit(self._work, key)

    def add_after(self, key: Hashable, delay: float) -> None:
        self._timer.call_later(delay, lambda: self.add(key))

    def busy(self) -> int:
        with self._lock:
            return len(self._queued) + len(self._active)

    def _work(self, key: Hashable) -> None:
        with self._lock:
            self._queued.discard(key)
            self._active.add(key)
        try:
            self._handler(key)
        except Exception:
            LOG.exception("handling %s failed", key)
        finally:
            with self._lock:
                self._active.discard(key)
                again = key in self._again
                self._again.discard(key)
        if again:
            self.add(key)
