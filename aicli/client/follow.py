"""A task's live events, followed across dropped connections until the task ends.

Reconnecting costs nothing and loses nothing: the stream is opened again with
``Last-Event-ID`` set to the last event handed out, and anything at or before
it is dropped, so each event comes once, in order. So once a stream has
answered, a dead connection is retried for a while (``RECONNECT_S`` since the
server was last heard, keep-alives included): long enough for a server to
restart or for another node to take the session over (two lease TTLs). A
stream that never answered gives up after the client's usual retries, as any
other call does.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx

from aicli.client import retries, sse
from aicli.contract import TERMINAL_STATUSES, Event
from aicli.errors import LimitExceeded, Unavailable

if TYPE_CHECKING:
    from aicli.client.client import Client
    from aicli.client.wire import Wire

# A stream sends a comment at least every 15 s: silence far past that is a dead connection.
SILENCE_S = 45.0
RECONNECT_S = 120.0
MAX_EMPTY_CONNECTIONS = 60


def is_terminal(event: Event) -> bool:
    return event.type == "status" and event.data.get("status") in TERMINAL_STATUSES


class EventStream(Iterator[Event]):
    """An iterator of events that holds a connection: close it, or use it in ``with``.

    Breaking out of a ``for`` loop leaves a generator suspended, and with it
    the connection and one of the server's stream slots, until it is
    collected; ``close`` (or leaving the ``with``) ends both at once, from any
    thread: the connection is closed under a reader blocked on it.
    """

    def __init__(self, client: Client, wire: Wire, task_id: str, after: int) -> None:
        self._client = client
        self._wire = wire
        self._task_id = task_id
        self._closed = False
        self._response: httpx.Response | None = None
        self._heard = time.monotonic()
        self._events = self._follow(after)

    def __next__(self) -> Event:
        return next(self._events)

    def close(self) -> None:
        self._closed = True
        response = self._response
        if response is not None:
            response.close()
        with contextlib.suppress(ValueError):  # running in another thread: it ends itself
            self._events.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _follow(self, last: int) -> Iterator[Event]:
        answered = False
        attempt = 0  # connections in a row that brought no event
        while not self._closed:
            failed: Exception | None = None
            try:
                for event in self._connection(last):
                    answered = True
                    if event is None:
                        continue
                    last, attempt = event.seq, 0
                    yield event
                    if is_terminal(event):
                        return
            except (httpx.TransportError, httpx.StreamError, Unavailable, LimitExceeded) as ex:
                failed = ex
            if self._closed:
                return
            if failed is None and self._ended():
                # It ended as the stream did (or without a terminal event): the rest, if any.
                yield from self._rest(last)
                return
            if self._give_up(answered, attempt):
                ended = Unavailable(f"The event stream of task '{self._task_id}' kept ending.")
                raise self._wire.unreachable(failed or ended)
            time.sleep(retries.delay(attempt, getattr(failed, "retry_after", None)))
            attempt += 1

    def _connection(self, last: int) -> Iterator[Event | None]:
        """One connection's events after ``last``; None once it is open (a sign of life)."""
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(last)}
        with self._wire.stream(f"/tasks/{self._task_id}/events", headers, SILENCE_S) as response:
            self._response = response
            self._heard = time.monotonic()
            try:
                yield None
                for event in sse.events(self._lines(response)):
                    if event.seq > last:
                        last = event.seq
                        yield event
            finally:
                self._response = None

    def _lines(self, response: httpx.Response) -> Iterator[str]:
        """The stream's lines; each one, keep-alives too, shows the server is there."""
        for line in response.iter_lines():
            self._heard = time.monotonic()
            yield line

    def _ended(self) -> bool:
        try:
            return self._client.get_task(self._task_id).is_terminal
        except Unavailable:
            return False

    def _rest(self, last: int) -> Iterator[Event]:
        while page := self._client.event_log(self._task_id, after=last):
            yield from page
            last = page[-1].seq

    def _give_up(self, answered: bool, attempt: int) -> bool:
        """A stream that never answered has the usual retries; one that did has time, since
        the server was last heard (a quiet task sends keep-alives), and a cap on
        connections that open and end with nothing, lest a server doing that loop us."""
        if not answered:
            return attempt >= self._wire.retries
        silent = time.monotonic() - self._heard
        return silent > RECONNECT_S or attempt >= MAX_EMPTY_CONNECTIONS
