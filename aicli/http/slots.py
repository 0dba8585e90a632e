"""A cap on requests that hold a Waitress worker thread for long (SSE, long-polls).

Each open stream or ``?wait`` poll pins one worker thread; without a cap a
handful of watchers could starve every ordinary request. Past the cap we answer
503 at once rather than queue, so clients back off instead of piling up.
"""

from __future__ import annotations

import threading

from aicli.errors import Unavailable


class Slot:
    """One held place; ``release`` is idempotent so every exit path may call it."""

    def __init__(self, owner: Slots) -> None:
        self._owner = owner
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._owner._free()

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Slots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphore = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._in_use = 0

    @property
    def in_use(self) -> int:
        return self._in_use

    def acquire(self) -> Slot:
        """A slot now, or ``Unavailable`` (503, ``Retry-After: 1``) if all are taken."""
        if not self._semaphore.acquire(blocking=False):
            raise Unavailable(
                f"All {self.limit} slots for event streams and long-polls are in use; "
                "retry shortly.",
                retry_after=1,
                details={"limit": self.limit},
            )
        with self._lock:
            self._in_use += 1
        return Slot(self)

    def _free(self) -> None:
        with self._lock:
            self._in_use -= 1
        self._semaphore.release()
