"""Wake-ups for whoever waits on a task: long-polls, SSE streams, ``Runtime.wait``.

Actors persist a change first and announce it here second, so a waiter that
wakes always finds the change in the store. A waiter reads the key's version,
checks the store, and waits only while the version has not moved, so an
announcement between the check and the wait is never missed. Versions come
from one clock, and a forgotten key reads as the clock at the time it was
forgotten, so forgetting a finished task can wake its waiters but never strand
them.

A task has two keys: its id moves when it ends (what long-polls and
``Runtime.wait`` wait for), ``events_of(id)`` with each event it records
(what SSE streams follow). A long-poll is then woken once, not once an event.

Each watched key has a condition of its own (on one shared lock): with
hundreds of streams open, an announcement wakes only that task's watchers,
not every waiting thread in the process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


def events_of(task_id: str) -> str:
    """The key that moves with every event of a task, its status events included."""
    return f"{task_id}/events"


class _Watch:
    __slots__ = ("condition", "waiters")

    def __init__(self, lock: threading.Lock) -> None:
        self.condition = threading.Condition(lock)
        self.waiters = 0


class Notifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clock = 0
        self._floor = 0
        self._versions: dict[str, int] = {}
        self._watches: dict[str, _Watch] = {}
        self._closed = False
        # Where an announcement also goes: the other nodes (``peers``), if there are any.
        self.relay: Callable[[str], None] | None = None

    def version(self, key: str) -> int:
        with self._lock:
            return self._versions.get(key, self._floor)

    def announce(self, key: str) -> None:
        self.announce_here(key)
        relay = self.relay
        if relay is not None:
            relay(key)

    def announce_here(self, key: str) -> None:
        """Wake this process's waiters only (the news came from another node)."""
        with self._lock:
            self._clock += 1
            self._versions[key] = self._clock
            self._wake(key)

    def nudge_all(self) -> None:
        """Wake every waiter to look again: news from other nodes may have been lost."""
        with self._lock:
            for key in list(self._watches):
                self._clock += 1
                self._versions[key] = self._clock
                self._wake(key)

    def forget(self, *keys: str) -> None:
        """Drop finished keys so that the table does not grow with every task ever run."""
        with self._lock:
            for key in keys:
                if self._versions.pop(key, None) is not None:
                    self._floor = self._clock
                    self._wake(key)

    def wait(self, key: str, seen: int, timeout: float | None) -> bool:
        """Block until ``key`` moves past version ``seen``; False on timeout or close."""
        with self._lock:
            watch = self._watches.get(key)
            if watch is None:
                watch = self._watches[key] = _Watch(self._lock)
            watch.waiters += 1
            try:
                moved = watch.condition.wait_for(
                    lambda: self._closed or self._versions.get(key, self._floor) != seen, timeout
                )
            finally:
                watch.waiters -= 1
                if not watch.waiters:
                    del self._watches[key]
            return moved and not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wake every waiter for good: the runtime is stopping."""
        with self._lock:
            self._closed = True
            for watch in self._watches.values():
                watch.condition.notify_all()

    def _wake(self, key: str) -> None:
        watch = self._watches.get(key)
        if watch is not None:
            watch.condition.notify_all()
