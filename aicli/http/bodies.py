"""The JSON bodies of ended tasks and of their pages of events, a large one encoded once
and shared by every response that sends it at once.

Sixty long-polls of a task that ended with a 10 MB answer each encoded the task for
itself and held the body while its client drained it: the server grew by a gigabyte
(the SSE streams of such a task share their frames, ``frames``). An ended task never
changes, nor do its events, so a body of either is the same for every reader: a large
one is kept for as long as any response still sends it (a weak reference), gone with
its last reader, never held for a reader to come; requests that ask at once wait for
one of them to make it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import falcon

from aicli import contract
from aicli.contract import Task
from aicli.flights import Flights
from aicli.http import media

# What a body is shared by: its kind, then what names it (a task's id, a page's bounds).
Key = tuple[str | int, ...]
# How long a request waits for another's encoding of the same body before it makes its own.
SHARED_WAIT_S = 30.0
# A task with less text than this is encoded by each response for itself: its body is
# under ``media.PIECE`` whatever the text (a character is at most six bytes of JSON, a
# ``\u`` escape), so it would never be kept to share, and encoding it (a microsecond)
# costs less than arranging to share it.
SHARED_FROM_CHARS = media.PIECE // 8


class Body:
    """An encoded value, and what it holds (an ended task: while it is sent, the store finds
    the task here, ``storage.ended``, instead of reading it again for the next reader)."""

    __slots__ = ("__weakref__", "data", "held")

    def __init__(self, data: bytes, held: object = None) -> None:
        self.data = data
        self.held = held


class Bodies:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: weakref.WeakValueDictionary[Key, Body] = weakref.WeakValueDictionary()
        self._flights: Flights[Key, Body] = Flights(SHARED_WAIT_S)

    def write(self, resp: falcon.Response, task: Task) -> None:
        """``task`` as the JSON body of ``resp`` (``media.write``), a large ended one's shared."""
        if not task.is_terminal or _chars(task) < SHARED_FROM_CHARS:
            media.write(resp, task)
            return
        _send(resp, self._of(("task", task.id), lambda: Body(contract.encode(task), task)))

    def write_ended(self, resp: falcon.Response, key: Key, value: Callable[[], Any]) -> None:
        """The JSON of ``value()`` as the body of ``resp``, which never changes (it is of an
        ended task): the body that another response sends, or is making, or one made here."""
        _send(resp, self._of(key, lambda: Body(contract.encode(value()))))

    def _of(self, key: Key, make: Callable[[], Body]) -> Body:
        with self._lock:
            body = self._sent.get(key)
        if body is not None:
            return body
        return self._flights.once(key, lambda: self._shared(key, make()))

    def _shared(self, key: Key, body: Body) -> Body:
        """``body``, found by ``key`` while any response still sends it, if it is large."""
        if len(body.data) > media.PIECE:
            with self._lock:
                self._sent[key] = body
        return body


def _chars(task: Task) -> int:
    metadata = sum(len(key) + len(value) for key, value in task.metadata.items())
    return len(task.command) + len(task.output or "") + len(task.error or "") + metadata


def _send(resp: falcon.Response, body: Body) -> None:
    """``body`` as the response's, shared for as long as the response sends it."""
    media.write_encoded(resp, body.data, holding=body)
