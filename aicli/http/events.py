"""A task's event log, as JSON or as a live Server-Sent Events stream.

New events reach a stream by notification: it blocks in
``Runtime.wait_for_events``, which the runtime wakes when it records an event.
Each open stream pins one Waitress worker thread, so streams take a slot (see
``slots``) and give it back when the stream ends, whichever way it ends.

Nothing wakes a blocked stream when its client hangs up, so the wait is cut
into slices of ``CLIENT_CHECK_S`` after which the stream asks Waitress whether
the client is still there; a vanished client's slot is free within that time
instead of at the next keep-alive.

A log can be long, so neither form reads it whole: JSON answers a page
(``limit``, continued with ``after``; shorter once its data passes
``paging.PAGE_BYTES``), and a stream replays page by page. A stream's frames are
shared with every other stream of the task (see ``frames``): an event is read
and encoded once, however many follow it.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import falcon

from aicli import contract
from aicli.contract import EventHeaders, EventPage, EventQuery, Principal
from aicli.errors import AicliError
from aicli.http import media
from aicli.http.bodies import Bodies
from aicli.http.frames import Frame, Frames
from aicli.http.middleware import caller
from aicli.http.query import params
from aicli.http.slots import Slot, Slots

if TYPE_CHECKING:
    from aicli.runtime import Runtime

log = logging.getLogger(__name__)

SSE_TYPE = "text/event-stream"
JSON_TYPE = "application/json"
KEEPALIVE_S = 15.0
CLIENT_CHECK_S = 2.0
KEEPALIVE_FRAME = b": keep-alive\n\n"
OPEN_FRAME = b": stream open\n\n"
# Events a stream reads from the store at once (fewer past ``paging.PAGE_BYTES``).
STREAM_PAGE = 200


class EventStream:
    """The SSE body: an iterable Waitress closes when the client goes away.

    Waitress calls ``close`` when the response ends or the client disconnects;
    the slot is released there. If the body is dropped without ever being
    iterated or closed, the finalizer still releases the slot. ``replay`` is the
    first frames of the log after ``after``; the stream reads the rest itself.
    """

    def __init__(
        self,
        runtime: Runtime,
        frames: Frames,
        task_id: str,
        after: int,
        replay: list[Frame],
        slot: Slot,
        *,
        keepalive_s: float,
        client_gone: Callable[[], bool],
        principal: Principal | None = None,
    ) -> None:
        """``principal``: the caller, whose revocation ends the stream (``Revocations``)."""
        self._runtime = runtime
        self._principal = principal
        self._shared = frames
        self._task_id = task_id
        self._after = after
        self._first_page = replay
        self._slot = slot
        self._keepalive_s = keepalive_s
        self._client_gone = client_gone
        self._frames = self._generate()
        self._finalizer = weakref.finalize(self, slot.release)

    def __iter__(self) -> Iterator[bytes]:
        return self._frames

    def close(self) -> None:
        try:
            self._frames.close()
        finally:
            self._slot.release()

    def _generate(self) -> Iterator[bytes]:
        try:
            yield OPEN_FRAME
            yield from self._follow()
        except AicliError as ex:
            log.info("Event stream of task %s ended early: %s", self._task_id, ex.message)
        except Exception:
            log.exception("Event stream of task %s failed", self._task_id)
        finally:
            self._slot.release()

    def _replay(self, frames: list[Frame]) -> Iterator[Frame]:
        """``frames`` and those after them that are stored by now, up to the terminal one."""
        while frames:
            for frame in frames:
                yield frame
                if frame.terminal:
                    return
            self._runtime.revocations.check(self._principal)
            frames = self._shared.after(self._task_id, frames[-1].seq)

    def _follow(self) -> Iterator[bytes]:
        after = self._after
        for frame in self._replay(self._first_page):
            yield from frame.pieces()
            after = frame.seq
            if frame.terminal:
                return
        next_ping = time.monotonic() + self._keepalive_s
        check_task = True
        while not self._client_gone():
            if check_task and self._runtime.get_task(self._task_id).is_terminal:
                # Its terminal event is recorded by now: send what is left and end.
                for frame in self._replay(self._shared.after(self._task_id, after)):
                    yield from frame.pieces()
                return
            timeout = min(next_ping - time.monotonic(), CLIENT_CHECK_S)
            events = self._runtime.wait_for_events(
                self._task_id, after, max(timeout, 0.0), STREAM_PAGE, principal=self._principal
            )
            if not events and self._runtime.stopped:
                return
            for event in events:
                frame = self._shared.of(self._task_id, event)
                yield from frame.pieces()
                after = frame.seq
                if frame.terminal:
                    return
            check_task = False
            if time.monotonic() >= next_ping:
                yield KEEPALIVE_FRAME
                next_ping = time.monotonic() + self._keepalive_s
                check_task = True  # a safety net should a terminal event never come


class EventsResource:
    def __init__(
        self,
        runtime: Runtime,
        slots: Slots,
        bodies: Bodies,
        *,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        self._runtime = runtime
        self._slots = slots
        self._bodies = bodies
        self._keepalive_s = keepalive_s
        self._frames = Frames(
            lambda task_id, after: runtime.event_page(task_id, after, STREAM_PAGE).data
        )

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        # Both checked in either form, like Last-Event-ID; only the JSON form pages by limit.
        given = params(req, EventQuery)
        after, limit = given.after, given.limit
        streaming = req.client_prefers([JSON_TYPE, SSE_TYPE]) == SSE_TYPE
        last_event_id = req.get_header("Last-Event-ID")
        if last_event_id is not None:
            # Checked in either form so that a malformed one is never silently ignored;
            # only a stream resumes from it.
            headers = contract.query({"Last-Event-ID": last_event_id}, EventHeaders)
            if streaming and headers.last_event_id is not None:
                after = headers.last_event_id
        if not streaming:
            self._write_page(req, resp, task_id, after, limit)
            return
        # Read before the stream starts, so that an unknown task is a 404, not an empty stream.
        self._runtime.check_task(task_id, principal=caller(req))
        self._stream_headers(resp)
        if req.method == "HEAD":  # the headers a stream would have, and no stream
            return
        # The slot first: a stream refused for want of one reads nothing.
        slot = self._slots.acquire()
        try:
            first_page = self._frames.after(task_id, after)
            stream = EventStream(
                self._runtime,
                self._frames,
                task_id,
                after,
                first_page,
                slot,
                keepalive_s=self._keepalive_s,
                client_gone=req.env.get("waitress.client_disconnected", lambda: False),
                principal=caller(req),
            )
        except BaseException:
            slot.release()
            raise
        resp.stream = stream

    def _write_page(
        self, req: falcon.Request, resp: falcon.Response, task_id: str, after: int, limit: int
    ) -> None:
        """A page of events as JSON; an ended task's is shared (``bodies``) once its caller
        is known to see it, as none of its events changes any more."""

        def page() -> EventPage:
            return self._runtime.event_page(task_id, after, limit, principal=caller(req))

        self._runtime.check_task(task_id, principal=caller(req))
        if self._runtime.task_ended(task_id):
            self._runtime.revocations.check(caller(req))
            self._bodies.write_ended(resp, ("events", task_id, after, limit), page)
        else:
            media.write(resp, page())

    @staticmethod
    def _stream_headers(resp: falcon.Response) -> None:
        resp.content_type = SSE_TYPE
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")
