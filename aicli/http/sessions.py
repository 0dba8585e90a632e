"""Sessions and the tasks submitted to them: translate HTTP into runtime calls."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import falcon

from aicli.errors import InvalidRequest
from aicli.http.media import read_json_object
from aicli.http.query import PAGE_PARAMS, page_body, page_kwargs, params, statuses, time_param
from aicli.models import SESSION_STATUSES, TASK_STATUSES
from aicli.validation import session_fields, task_fields

if TYPE_CHECKING:
    from aicli.runtime import Runtime

MAX_IDEMPOTENCY_KEY = 255
# Visible ASCII, spaces only inside: what a UUID or any key a client mints looks like.
IDEMPOTENCY_KEY = r"[!-~](?:[ -~]*[!-~])?"
TASK_LIST_FILTERS = ("status", "created_after", "created_before")


def task_list_filters(given: dict[str, str]) -> dict[str, object]:
    return {
        "status": statuses(given, TASK_STATUSES),
        "created_after": time_param(given, "created_after"),
        "created_before": time_param(given, "created_before"),
        **page_kwargs(given),
    }


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
        params(req, ())
        settings = self._runtime.settings
        body = read_json_object(req, settings.max_body_bytes)
        fields = session_fields(body, workspace_root=settings.workspace_root)
        session = self._runtime.open_session(**fields)
        resp.status = falcon.HTTP_201
        resp.location = f"/sessions/{session.id}"
        resp.media = session.to_json()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        given = params(req, ("status", *PAGE_PARAMS))
        page = self._runtime.list_sessions(
            status=statuses(given, SESSION_STATUSES), **page_kwargs(given)
        )
        resp.media = page_body(page)


class SessionResource:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def on_get(self, req: falcon.Request, resp: falcon.Response, session_id: str) -> None:
        params(req, ())
        resp.media = self._runtime.get_session(session_id).to_json()

    def on_delete(self, req: falcon.Request, resp: falcon.Response, session_id: str) -> None:
        params(req, ())
        resp.media = self._runtime.close_session(session_id).to_json()


class SessionTasksResource:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def on_post(self, req: falcon.Request, resp: falcon.Response, session_id: str) -> None:
        params(req, ())
        settings = self._runtime.settings
        key = idempotency_key(req)
        body = read_json_object(req, settings.max_body_bytes)
        fields = task_fields(body, max_command_chars=settings.max_command_chars)
        task, created = self._runtime.submit_task(
            session_id,
            fields["command"],
            timeout_s=fields["timeout_s"],
            metadata=fields["metadata"],
            idempotency_key=key,
        )
        resp.status = falcon.HTTP_202 if created else falcon.HTTP_200
        resp.location = f"/tasks/{task.id}"
        resp.media = task.to_json()

    def on_get(self, req: falcon.Request, resp: falcon.Response, session_id: str) -> None:
        given = params(req, (*TASK_LIST_FILTERS, *PAGE_PARAMS))
        page = self._runtime.list_tasks(session_id=session_id, **task_list_filters(given))
        resp.media = page_body(page)
