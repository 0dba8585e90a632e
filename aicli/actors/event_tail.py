"""The newest events of watched tasks, read from the store once for all their watchers.

Hundreds of SSE streams may follow one task. If each read the store when the
task moved, one event would cost hundreds of queries (and, on PostgreSQL, more
connections than the pool has). Instead the first watcher to wake reads what
is new into the task's tail, and the others take it from there.

Events are immutable once committed and their sequence numbers are dense, so
a tail is always a run of consecutive committed events; it is refreshed only
when the notifier's version for the task has moved since the tail last read,
which the caller reads before anything else (the notifier's rule). A full
page read leaves the tail marked stale, so the next watcher reads on.

Tails are bounded by the size of their events as well as their number (one
event can be a 10 MB answer): each tail, and all of them together.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict

from aicli.contract import Event
from aicli.storage import Store

# Tails kept (least recently read dropped first), and events kept in each: a
# watcher further behind than that reads the store itself. A log is read a page
# at a time (bounded by ``paging.PAGE_BYTES`` too), never whole: it can be long.
MAX_TASKS = 256
MAX_EVENTS = 400
READ_PAGE = 200
# Characters of event data a tail keeps, and all tails together.
MAX_TAIL_CHARS = 4 * 1024 * 1024
MAX_CHARS = 16 * 1024 * 1024


def size_of(value: object) -> int:
    """About the characters ``value`` takes as JSON: its text, and a little per item."""
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, dict):
        return sum(len(key) + size_of(item) + 4 for key, item in value.items()) + 2
    if isinstance(value, list | tuple):
        return sum(size_of(item) + 1 for item in value) + 2
    return 8


class _Tail:
    __slots__ = ("chars", "events", "lock", "seqs", "sizes", "start", "version")

    def __init__(self, start: int) -> None:
        self.lock = threading.Lock()
        self.start = start  # every event with seq > start is in ``events`` (up to the last)
        self.events: list[Event] = []
        self.seqs: list[int] = []
        self.sizes: list[int] = []
        self.chars = 0
        self.version: int | None = None

    @property
    def last(self) -> int:
        return self.seqs[-1] if self.seqs else self.start

    def take(self, new: list[Event]) -> None:
        sizes = [size_of(event.data) for event in new]
        self.events.extend(new)
        self.seqs.extend(event.seq for event in new)
        self.sizes.extend(sizes)
        self.chars += sum(sizes)

    def trim(self) -> None:
        excess = max(0, len(self.events) - MAX_EVENTS)
        chars = self.chars - sum(self.sizes[:excess])
        while excess < len(self.events) and chars > MAX_TAIL_CHARS:
            chars -= self.sizes[excess]
            excess += 1
        if excess > 0:
            self.start = self.seqs[excess - 1]
            del self.events[:excess], self.seqs[:excess], self.sizes[:excess]
            self.chars = chars


class EventTails:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._tails: OrderedDict[str, _Tail] = OrderedDict()

    def after(self, task_id: str, after: int, limit: int | None, version: int) -> list[Event]:
        """Events with ``seq > after`` (at most ``limit``, fewer past ``paging.PAGE_BYTES``), as
        of notifier ``version`` or later."""
        tail = self._tail(task_id, after)
        if tail is None:
            return self._store.event_page(task_id, after=after, limit=limit or READ_PAGE)[0]
        with tail.lock:
            if tail.version != version:
                new, more = self._store.event_page(task_id, after=tail.last, limit=READ_PAGE)
                tail.take(new)
                if not more:
                    tail.version = version
            begin = bisect.bisect_right(tail.seqs, after)
            end = len(tail.events) if limit is None else begin + limit
            found = tail.events[begin:end]
            tail.trim()
            return found

    def _tail(self, task_id: str, after: int) -> _Tail | None:
        """The task's tail, new if it has none; None if ``after`` lies before what it keeps."""
        with self._lock:
            tail = self._tails.get(task_id)
            if tail is None:
                tail = self._tails[task_id] = _Tail(after)
            else:
                self._tails.move_to_end(task_id)
            while len(self._tails) > 1 and (
                len(self._tails) > MAX_TASKS
                or sum(other.chars for other in self._tails.values()) > MAX_CHARS
            ):
                self._tails.popitem(last=False)
            return tail if after >= tail.start else None
