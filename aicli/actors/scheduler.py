"""One timer thread for every actor: delayed ``tell``s (task timeouts, kills, idle stops).

A ``threading.Timer`` per timer is a thread per timer, and an idle clock
restarted after every task left one sleeping thread behind each time (150
tasks took a server from 8 to 158 threads). Here every timer is an entry in one
heap, served by one thread; a cancelled entry is dropped when it comes due, and
the heap is compacted when cancelled entries outnumber live ones, so neither
threads nor memory grow with the number of tasks run.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from typing import Any

import pykka

_COMPACT_MIN = 64


class Timer:
    """One scheduled ``tell``; ``cancel`` is safe from any thread, any number of times."""

    __slots__ = ("due", "ref", "message", "cancelled", "_scheduler")

    def __init__(self, due: float, ref: pykka.ActorRef[Any], message: object, scheduler: Scheduler):
        self.due = due
        self.ref = ref
        self.message = message
        self.cancelled = False
        self._scheduler = scheduler

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._scheduler._cancelled()


class Scheduler:
    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._stale = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="aicli-timers", daemon=True)
        self._thread.start()

    def tell_later(self, seconds: float, ref: pykka.ActorRef[Any], message: object) -> Timer:
        """Tell ``ref`` ``message`` after ``seconds`` (a gone actor is skipped quietly)."""
        timer = Timer(time.monotonic() + max(0.0, seconds), ref, message, self)
        with self._condition:
            heapq.heappush(self._heap, (timer.due, next(self._order), timer))
            if self._heap[0][2] is timer:
                self._condition.notify()
        return timer

    @staticmethod
    def now() -> float:
        """The clock timers run by (monotonic)."""
        return time.monotonic()

    def __len__(self) -> int:
        """Timers still to fire (cancelled ones excluded)."""
        with self._condition:
            return len(self._heap) - self._stale

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._heap.clear()
            self._condition.notify()
        self._thread.join(timeout=5)

    def _cancelled(self) -> None:
        with self._condition:
            self._stale += 1
            if self._stale > _COMPACT_MIN and self._stale * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
                self._stale = 0

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._condition.wait(timeout)
                if self._stopped:
                    return
                _, _, timer = heapq.heappop(self._heap)
                if timer.cancelled:
                    self._stale = max(0, self._stale - 1)
                    continue
                timer.cancelled = True  # fired: a later cancel() is a no-op
            with contextlib.suppress(pykka.ActorDeadError):
                timer.ref.tell(timer.message)
