"""One making of a thing for everyone who asks for it at the same moment.

Sixty readers woken by the end of a task with a 10 MB answer each read it, built it and
encoded it for themselves; here the first makes it and the rest wait for what it made
(the SSE frames of ``http.frames``, the JSON bodies of ``http.bodies``, the ended tasks
of ``storage.ended``). Nothing is kept: once made, the next to ask makes it again, so
what to keep is each user's own choice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Flight(Generic[V]):
    __slots__ = ("done", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: V | None = None  # None: it failed, and each waiter makes its own


class Flights(Generic[K, V]):
    def __init__(self, wait_s: float) -> None:
        """``wait_s``: how long a caller waits for another's making before it makes its own."""
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._flights: dict[K, _Flight[V]] = {}

    def once(
        self, key: K, make: Callable[[], V], usable: Callable[[V], bool] = lambda _: True
    ) -> V:
        """``make()``, or what another caller's ``make()`` for ``key`` at the same time made,
        if that is ``usable`` (else, or if it failed or took too long, ``make()`` here)."""
        with self._lock:
            flight = self._flights.get(key)
            mine = flight is None
            if mine:
                flight = self._flights[key] = _Flight()
        assert flight is not None
        if not mine:
            flight.done.wait(self._wait_s)
            made = flight.value
            return made if made is not None and usable(made) else make()
        try:
            flight.value = made = make()
            return made
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()
