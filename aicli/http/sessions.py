"""Sessions and the tasks submitted to them: translate HTTP into runtime calls."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import falcon
import msgspec

from aicli.contract import (
    SessionCreate,
    SessionListQuery,
    SessionTaskListQuery,
    TaskListQuery,
    TaskSubmit,
)
from aicli.errors import InvalidRequest, Unavailable
from aicli.http import media
from aicli.http.bodies import Bodies
from aicli.http.middleware import caller
from aicli.http.preferences import preferred_wait
from aicli.http.query import params
from aicli.http.slots import Slots

if TYPE_CHECKING:
    from aicli.runtime import Runtime

MAX_IDEMPOTENCY_KEY = 255
# Visible ASCII, spaces only inside: what a UUID or any key a client mints looks like.
IDEMPOTENCY_KEY = r"[!-~](?:[ -~]*[!-~])?"


def idempotency_key(req: falcon.Request) -> str | None:
    key = req.get_header("Idempotency-Key")
    if key is None:
        return None
    if len(key) > MAX_IDEMPOTENCY_KEY or not re.fullmatch(IDEMPOTENCY_KEY, key):
        raise InvalidRequest(
            f"The Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII "
            "characters (inner spaces allowed).",
            {"field": "Idempotency-Key"},
        )
    return key


class SessionsResource:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        params(req)
        request = media.read(req, SessionCreate, self._runtime.settings.max_body_bytes)
        session = self._runtime.open_session(request, principal=caller(req))
        resp.status = falcon.HTTP_201
        resp.location = f"/sessions/{session.id}"
        media.write(resp, session)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        page = self._runtime.list_sessions(params(req, SessionListQuery), principal=caller(req))
        media.write(resp, page)


class SessionResource:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def on_get(self, req: falcon.Request, resp: falcon.Response, session_id: str) -> None:
        params(req)
        media.write(resp, self._runtime.get_session(session_id, principal=caller(req)))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, session_id: str) -> None:
        params(req)
        media.write(resp, self._runtime.close_session(session_id, principal=caller(req)))


class SessionTasksResource:
    def __init__(self, runtime: Runtime, slots: Slots, bodies: Bodies) -> None:
        self._runtime = runtime
        self._slots = slots
        self._bodies = bodies

    def on_post(self, req: falcon.Request, resp: falcon.Response, session_id: str) -> None:
        """Accept a task; with ``Prefer: wait=N``, answer with it once it is terminal.

        Waiting pins a worker thread like a long-poll, so it takes a slot; with
        none free the preference is not applied (a plain 202), never refused:
        the task is accepted either way.
        """
        params(req)
        key = idempotency_key(req)
        request = media.read(req, TaskSubmit, self._runtime.settings.max_body_bytes)
        wait = preferred_wait(req)
        slot = None
        if wait:
            try:
                slot = self._slots.acquire()
            except Unavailable:
                wait = None
        try:
            task, created = self._runtime.submit_task(
                session_id, request, idempotency_key=key, wait=wait, principal=caller(req)
            )
        finally:
            if slot is not None:
                slot.release()
        resp.status = falcon.HTTP_202 if created else falcon.HTTP_200
        if wait and task.is_terminal:
            resp.status = falcon.HTTP_200
            resp.set_header("Preference-Applied", f"wait={wait}")
        resp.location = f"/tasks/{task.id}"
        self._bodies.write(resp, task)

    def on_get(self, req: falcon.Request, resp: falcon.Response, session_id: str) -> None:
        # The route's filters are the list's own, narrowed to the session of the path.
        given = msgspec.structs.asdict(params(req, SessionTaskListQuery))
        query = TaskListQuery(session_id=session_id, **given)
        page = self._runtime.list_tasks(query, principal=caller(req))
        media.write(resp, page)
