"""The Server-Sent Events frames of tasks' events, each encoded once and shared by every
stream that sends it.

Twenty slow readers of a task with a 10 MB answer each read the log from the store,
decoded it and encoded its frames for themselves, and held all that while their
clients drained it: the server went from 47 MB to 1.4 GB. Here a frame is built once
and shared by ``(task, seq)``: a small one is kept within ``MAX_BYTES`` (least recently
sent dropped first), a large one for as long as any stream still sends it (a weak
reference), so that it is gone with its last reader, not held for a reader to come. And
streams starting at the same place at once wait for one read of the store instead of
each making its own. A frame is sent in pieces of ``media.PIECE`` bytes, so that Waitress
never copies a large one whole into a connection's buffer.

Events never change once stored, and their sequence numbers are dense, so a kept frame
is never stale and a stream can walk the kept frames seq by seq.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from aicli import contract
from aicli.contract import TERMINAL_STATUSES, Event
from aicli.flights import Flights
from aicli.http import media
from aicli.http.media import PIECE

MAX_BYTES = 16 * 1024 * 1024
# A frame larger than this is shared only while some stream sends it, never kept.
MAX_ONE = 256 * 1024
# What a kept frame costs beyond its bytes (the entry, its key, the frame object).
OVERHEAD = 200
# Frames a stream takes from what is kept at once.
RUN = 200
# How long a stream waits for another's read or frame before it makes its own.
SHARED_WAIT_S = 30.0

Reader = Callable[[str, int], list[Event]]


class Frame:
    __slots__ = ("__weakref__", "data", "seq", "terminal")

    def __init__(self, event: Event) -> None:
        head = f"id: {event.seq}\nevent: {event.type}\ndata: ".encode()
        self.data = head + contract.encode(event) + b"\n\n"
        self.seq = event.seq
        self.terminal = event.type == "status" and event.data.get("status") in TERMINAL_STATUSES

    def pieces(self) -> Iterator[bytes]:
        if len(self.data) <= PIECE:
            return iter((self.data,))
        return media.pieces(self.data)


class Frames:
    def __init__(self, read: Reader, max_bytes: int = MAX_BYTES) -> None:
        """``read(task_id, after)``: a page of the events after ``after``, bounded in size."""
        self._read = read
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._kept: OrderedDict[tuple[str, int], Frame] = OrderedDict()
        self._sent: weakref.WeakValueDictionary[tuple[str, int], Frame] = (
            weakref.WeakValueDictionary()
        )
        self._bytes = 0
        self._flights: Flights[tuple[str, str, int], Any] = Flights(SHARED_WAIT_S)

    def of(self, task_id: str, event: Event) -> Frame:
        """The frame of ``event``, built once however many streams send it at once."""
        with self._lock:
            found = self._take((task_id, event.seq))
        if found is not None:
            return found
        return self._flights.once(
            ("frame", task_id, event.seq), lambda: self._build(task_id, event)
        )

    def after(self, task_id: str, after: int) -> list[Frame]:
        """Frames of the events with ``seq > after``, in order: a run of kept ones, else a
        page read from the store (once for all who ask at once); empty when none follow."""
        with self._lock:
            run: list[Frame] = []
            while len(run) < RUN:
                found = self._take((task_id, after + len(run) + 1))
                if found is None:
                    break
                run.append(found)
        if run:
            return run
        return self._flights.once(
            ("read", task_id, after),
            lambda: [self.of(task_id, event) for event in self._read(task_id, after)],
        )

    def _build(self, task_id: str, event: Event) -> Frame:
        frame = Frame(event)
        key = (task_id, frame.seq)
        size = len(frame.data) + OVERHEAD
        with self._lock:
            if size > min(MAX_ONE, self._max_bytes):
                self._sent[key] = frame
            elif key not in self._kept:
                self._kept[key] = frame
                self._bytes += size
                while self._bytes > self._max_bytes:
                    _, dropped = self._kept.popitem(last=False)
                    self._bytes -= len(dropped.data) + OVERHEAD
        return frame

    def _take(self, key: tuple[str, int]) -> Frame | None:
        found = self._kept.get(key)
        if found is not None:
            self._kept.move_to_end(key)
            return found
        return self._sent.get(key)
