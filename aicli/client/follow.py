"""A task's live events, followed across dropped connections until the task ends.

Reconnecting costs nothing and loses nothing: the stream is opened again with
``Last-Event-ID`` set to the last event handed out, and anything at or before
it is dropped, so each event comes once, in order. So once a stream has
answered, a dead connection is retried for a while (``RECONNECT_S`` without
progress): long enough for a server to restart or for another node to take the
session over (two lease TTLs). A stream that never answered gives up after the
client's usual retries, as any other call does.
"""

from __future__ import annotations

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


def is_terminal(event: Event) -> bool:
    return event.type == "status" and event.data.get("status") in TERMINAL_STATUSES


class EventStream(Iterator[Event]):
    """An iterator of events that holds a connection: close it, or use it in ``with``.

    Breaking out of a ``for`` loop leaves a generator suspended, and with it
    the connection and one of the server's stream slots, until it is
    collected; ``close`` (or leaving the ``with``) ends both at once.
    """

    def __init__(self, client: Client, wire: Wire, task_id: str, after: int) -> None:
        self._client = client
        self._wire = wire
        self._task_id = task_id
        self._events = self._follow(after)

    def __next__(self) -> Event:
        return next(self._events)

    def close(self) -> None:
        self._events.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _follow(self, last: int) -> Iterator[Event]:
        answered = False
        attempt = 0
        progress = time.monotonic()
        while True:
            failed: Exception | None = None
            try:
                with self._wire.lines(self._path, self._headers(last), SILENCE_S) as lines:
                    answered = True
                    for event in sse.events(lines):
                        if event.seq <= last:
                            continue
                        last, attempt, progress = event.seq, 0, time.monotonic()
                        yield event
                        if is_terminal(event):
                            return
            except (httpx.TransportError, Unavailable, LimitExceeded) as ex:
                failed = ex
            if failed is None and self._ended():
                # It ended as the stream did (or without a terminal event): the rest, if any.
                yield from self._rest(last)
                return
            if self._give_up(answered, attempt, progress):
                raise self._wire.unreachable(
                    failed
                    or Unavailable(f"The event stream of task '{self._task_id}' kept ending.")
                )
            time.sleep(retries.delay(attempt, getattr(failed, "retry_after", None)))
            attempt += 1

    @property
    def _path(self) -> str:
        return f"/tasks/{self._task_id}/events"

    @staticmethod
    def _headers(last: int) -> dict[str, str]:
        return {"Accept": "text/event-stream", "Last-Event-ID": str(last)}

    def _ended(self) -> bool:
        try:
            return self._client.get_task(self._task_id).is_terminal
        except Unavailable:
            return False

    def _rest(self, last: int) -> Iterator[Event]:
        while page := self._client.event_log(self._task_id, after=last):
            yield from page
            last = page[-1].seq

    def _give_up(self, answered: bool, attempt: int, progress: float) -> bool:
        if not answered:
            return attempt >= self._wire.retries
        return time.monotonic() - progress > RECONNECT_S
