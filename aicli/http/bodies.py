"""The JSON bodies of ended tasks, a large one encoded once and shared by every response
that sends it at once.

Sixty long-polls of a task that ended with a 10 MB answer each encoded the task for
itself and held the body while its client drained it: the server grew by a gigabyte
(the SSE streams of such a task share their frames, ``frames``). An ended task never
changes, so its body is the same for every reader: a large one is kept for as long as
any response still sends it (a weak reference), gone with its last reader, never held
for a reader to come. A small one is encoded by each request as before.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator

import falcon

from aicli import contract
from aicli.contract import Task
from aicli.http import media

# How long a request waits for another's encoding of the same body before it makes its own.
SHARED_WAIT_S = 30.0


class Body:
    """An encoded task, and the task: while it is sent, the store finds the task it holds
    (``storage.ended``) instead of reading it again for the next reader."""

    __slots__ = ("__weakref__", "data", "task")

    def __init__(self, task: Task) -> None:
        self.task = task
        self.data = contract.encode(task)


class _Flight:
    """A body being encoded that other requests for it wait for."""

    __slots__ = ("body", "done")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.body: Body | None = None  # None: it failed, and each waiter encodes its own


class Bodies:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: weakref.WeakValueDictionary[str, Body] = weakref.WeakValueDictionary()
        self._flights: dict[str, _Flight] = {}

    def write(self, resp: falcon.Response, task: Task) -> None:
        """``task`` as the JSON body of ``resp`` (``media.write``), an ended one's shared."""
        if not task.is_terminal:
            media.write(resp, task)
            return
        body = self._of(task)
        resp.content_type = media.JSON_TYPE
        if len(body.data) <= media.PIECE:
            resp.data = body.data
            return
        resp.content_length = len(body.data)
        resp.stream = _sending(body)

    def _of(self, task: Task) -> Body:
        """The body of the ended ``task``: one being sent, or being encoded (waited for),
        or encoded here."""
        with self._lock:
            body = self._sent.get(task.id)
            if body is not None:
                return body
            flight = self._flights.get(task.id)
            mine = flight is None
            if mine:
                flight = self._flights[task.id] = _Flight()
        assert flight is not None
        if not mine:
            flight.done.wait(SHARED_WAIT_S)
            return flight.body or Body(task)
        try:
            flight.body = Body(task)
            if len(flight.body.data) > media.PIECE:
                with self._lock:
                    self._sent[task.id] = flight.body
            return flight.body
        finally:
            with self._lock:
                del self._flights[task.id]
            flight.done.set()


def _sending(body: Body) -> Iterator[bytes]:
    """The pieces of ``body``, holding it (so that it stays shared) until the last is sent."""
    yield from media.pieces(body.data)
