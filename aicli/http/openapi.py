"""The OpenAPI 3.1 document served at ``/openapi.json``, built in Python.

Built from the same constants the validators use (statuses, permission modes,
limits), so the document can't drift from what the service accepts. The tests
validate real responses against these schemas.
"""

from __future__ import annotations

import copy
import os
from importlib import metadata
from typing import Any

import falcon

from aicli.http.sessions import IDEMPOTENCY_KEY, MAX_IDEMPOTENCY_KEY
from aicli.models import PERMISSION_MODES, SESSION_STATUSES, TASK_STATUSES
from aicli.settings import Settings
from aicli.validation import (
    MAX_EVENT_LIMIT,
    MAX_LIMIT,
    MAX_SEQ,
    MAX_TIMEOUT_S,
    MAX_TURNS,
    MAX_WAIT_S,
    SESSION_FIELDS,
)

JSON = "application/json"
ERROR_CODES = (
    "invalid_request",
    "unauthorized",
    "session_not_found",
    "task_not_found",
    "not_found",
    "method_not_allowed",
    "session_closed",
    "task_not_cancellable",
    "payload_too_large",
    "unsupported_media_type",
    "too_many_requests",
    "unavailable",
    "internal_error",
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


TIME = {
    "type": "string",
    "format": "date-time",
    "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$",
    "description": "RFC 3339, UTC, microseconds, Z.",
    "examples": ["2026-11-24T04:33:10.123456Z"],
}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
TOOLS = {"type": "array", "items": {"type": "string", "minLength": 1}}
COUNT = {"type": "integer", "minimum": 0}


def _status_list(statuses: tuple[str, ...]) -> dict[str, Any]:
    one = "|".join(statuses)
    return {
        "type": "string",
        "pattern": rf"^\s*({one})\s*(,\s*({one})\s*)*$",
        "description": f"Comma list of: {', '.join(statuses)}.",
    }


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "additionalProperties": False,
                "properties": {
                    "code": {"type": "string", "enum": list(ERROR_CODES)},
                    "message": {"type": "string", "minLength": 1},
                    "details": {"type": "object"},
                },
            }
        },
    },
    "SessionCreate": {
        "type": "object",
        "required": ["workdir"],
        "additionalProperties": False,
        "description": "Unknown fields are rejected (400). null for an optional field means "
        "not given.",
        "properties": {
            "workdir": {
                "type": "string",
                "minLength": 1,
                "description": "An existing directory; inside AICLI_WORKSPACE_ROOT when that "
                "is set. Stored as its real path.",
            },
            "model": _nullable({"type": "string", "minLength": 1}),
            "permission_mode": _nullable({"type": "string", "enum": list(PERMISSION_MODES)}),
            "allowed_tools": _nullable(TOOLS),
            "disallowed_tools": _nullable(TOOLS),
            "append_system_prompt": _nullable({"type": "string"}),
            "max_turns": _nullable({"type": "integer", "minimum": 1, "maximum": MAX_TURNS}),
            "metadata": _nullable(STRING_MAP),
        },
    },
    "Session": {
        "type": "object",
        "additionalProperties": False,
        "required": [
            *SESSION_FIELDS,
            "id",
            "status",
            "claude_session_id",
            "process_alive",
            "created_at",
            "updated_at",
            "last_active_at",
            "task_counts",
            "total_cost_usd",
        ],
        "properties": {
            "id": {"type": "string", "minLength": 1},
            "status": {"type": "string", "enum": list(SESSION_STATUSES)},
            "workdir": {"type": "string"},
            "model": _nullable({"type": "string"}),
            "permission_mode": _nullable({"type": "string", "enum": list(PERMISSION_MODES)}),
            "allowed_tools": {"type": "array", "items": {"type": "string"}},
            "disallowed_tools": {"type": "array", "items": {"type": "string"}},
            "append_system_prompt": _nullable({"type": "string"}),
            "max_turns": _nullable({"type": "integer", "minimum": 1, "maximum": MAX_TURNS}),
            "metadata": STRING_MAP,
            "claude_session_id": _nullable({"type": "string"}),
            "process_alive": {"type": "boolean"},
            "created_at": TIME,
            "updated_at": TIME,
            "last_active_at": _nullable(TIME),
            "task_counts": {
                "type": "object",
                "required": list(TASK_STATUSES),
                "additionalProperties": False,
                "properties": {status: COUNT for status in TASK_STATUSES},
            },
            "total_cost_usd": {"type": "number", "minimum": 0},
        },
    },
    "TaskCreate": {
        "type": "object",
        "required": ["command"],
        "additionalProperties": False,
        "description": "Unknown fields are rejected (400). A command of only whitespace is "
        "rejected.",
        "properties": {
            "command": {"type": "string", "minLength": 1},
            "timeout_s": _nullable(
                {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S}
            ),
            "metadata": _nullable(STRING_MAP),
        },
    },
    "Task": {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "id",
            "session_id",
            "command",
            "status",
            "output",
            "error",
            "created_at",
            "started_at",
            "completed_at",
            "queue_position",
            "timeout_s",
            "cost_usd",
            "num_turns",
            "duration_ms",
            "usage",
            "metadata",
        ],
        "properties": {
            "id": {"type": "string", "minLength": 1},
            "session_id": {"type": "string", "minLength": 1},
            "command": {"type": "string"},
            "status": {"type": "string", "enum": list(TASK_STATUSES)},
            "output": _nullable({"type": "string"}),
            "error": _nullable({"type": "string"}),
            "created_at": TIME,
            "started_at": _nullable(TIME),
            "completed_at": _nullable(TIME),
            "queue_position": _nullable(COUNT),
            "timeout_s": _nullable({"type": "number", "exclusiveMinimum": 0}),
            "cost_usd": _nullable({"type": "number", "minimum": 0}),
            "num_turns": _nullable(COUNT),
            "duration_ms": _nullable(COUNT),
            "usage": _nullable(
                {
                    "type": "object",
                    "required": ["input_tokens", "output_tokens"],
                    "properties": {"input_tokens": COUNT, "output_tokens": COUNT},
                }
            ),
            "metadata": STRING_MAP,
        },
    },
    "Event": {
        "type": "object",
        "additionalProperties": False,
        "required": ["seq", "type", "created_at", "data"],
        "properties": {
            "seq": {"type": "integer", "minimum": 1},
            "type": {
                "type": "string",
                "description": "'status' for a status change (data.status is the new "
                "status); otherwise the type of the Claude stream message.",
            },
            "created_at": TIME,
            "data": {"type": "object"},
        },
    },
    "EventList": {
        "type": "object",
        "additionalProperties": False,
        "required": ["data", "has_more"],
        "properties": {
            "data": {"type": "array", "items": _ref("Event")},
            "has_more": {
                "type": "boolean",
                "description": "More events follow: ask again with `after` the last seq.",
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "additionalProperties": False,
        "properties": {"status": {"const": "ok"}},
    },
    "Ready": {
        "type": "object",
        "required": ["status", "database", "claude"],
        "additionalProperties": {"type": "string"},
        "properties": {
            "status": {"const": "ready"},
            "database": {"type": "string", "description": "'ok' when the database answers."},
            "claude": {"type": "string", "description": "The Claude Code CLI version."},
        },
    },
}

for _name, _item in (("SessionList", "Session"), ("TaskList", "Task")):
    SCHEMAS[_name] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["data", "has_more", "next_cursor"],
        "properties": {
            "data": {"type": "array", "items": _ref(_item)},
            "has_more": {"type": "boolean"},
            "next_cursor": _nullable({"type": "string", "minLength": 1}),
        },
    }

ERROR_MEANINGS = {
    "400": "Invalid request: a bad body, field, query parameter or header "
    "(code invalid_request). Unknown query parameters are rejected. A request that is "
    "not valid HTTP (say, a malformed Content-Length) gets a plain-text 400 from the "
    "HTTP server itself.",
    "401": "Missing or wrong bearer token (code unauthorized); sent only when the "
    "server has an API token.",
    "404": "Unknown id (code session_not_found or task_not_found).",
    "409": "Conflict with the current state (session_closed, task_not_cancellable).",
    "413": "Request body larger than the limit (payload_too_large).",
    "415": "A body with a Content-Type other than application/json (unsupported_media_type). "
    "A body without Content-Type is read as JSON.",
    "429": "A limit is full (too_many_requests); Retry-After says when to retry.",
    "500": "A server fault (internal_error); the details are in the server log only.",
    "503": "Shutting down, overloaded or not ready (unavailable); Retry-After when known.",
}

RETRY_AFTER = {
    "description": "Seconds to wait before retrying; on 503 only when known.",
    "schema": {"type": "integer", "minimum": 1},
}
LOCATION = {
    "description": "Path of the new resource.",
    "required": True,
    "schema": {"type": "string"},
}


def _error_response(status: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": ERROR_MEANINGS[status],
        "content": {JSON: {"schema": _ref("Error")}},
    }
    if status == "400":
        # Waitress answers requests it cannot parse as HTTP before the app sees them.
        response["content"]["text/plain"] = {"schema": {"type": "string"}}
    if status == "429":
        response["headers"] = {"Retry-After": {**RETRY_AFTER, "required": True}}
    if status == "503":
        response["headers"] = {"Retry-After": RETRY_AFTER}
    if status == "401":
        response["headers"] = {
            "WWW-Authenticate": {
                "description": "Bearer",
                "required": True,
                "schema": {"type": "string", "const": "Bearer"},
            }
        }
    return response


def _json_response(
    description: str, schema: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": _ref(schema)}},
    }
    if headers:
        response["headers"] = headers
    return response


def _param(name: str, where: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


SESSION_ID = _param("session_id", "path", {"type": "string"}, "A session id.")
TASK_ID = _param("task_id", "path", {"type": "string"}, "A task id.")
PAGE = [
    _param(
        "limit",
        "query",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50},
        f"Page size, 1 to {MAX_LIMIT}.",
    ),
    _param(
        "cursor",
        "query",
        {"type": "string", "minLength": 1},
        "next_cursor of the previous page (with the same filters and order); "
        "a malformed cursor is 400.",
    ),
    _param(
        "order",
        "query",
        {"type": "string", "enum": ["desc", "asc"], "default": "desc"},
        "desc: newest first; asc: oldest first.",
    ),
]
TASK_FILTERS = [
    _param("status", "query", _status_list(TASK_STATUSES), "Only tasks in these statuses."),
    _param(
        "created_after",
        "query",
        {"type": "string", "format": "date-time"},
        "Only tasks created strictly after this RFC 3339 time (Z or an offset).",
    ),
    _param(
        "created_before",
        "query",
        {"type": "string", "format": "date-time"},
        "Only tasks created strictly before this RFC 3339 time (Z or an offset).",
    ),
]


def _operation(
    summary: str,
    responses: dict[str, Any],
    errors: tuple[str, ...],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: str | None = None,
    public: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": dict(responses)}
    if parameters:
        operation["parameters"] = parameters
    if body:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref(body)}}}
    for status in (*errors, *(() if public else ("401",)), "500"):
        operation["responses"][status] = _error_response(status)
    if public:
        operation["security"] = []
    return operation


READS = ("400", "404", "503")

PATHS: dict[str, Any] = {
    "/sessions": {
        "post": _operation(
            "Open a session",
            {"201": _json_response("The new session.", "Session", {"Location": LOCATION})},
            ("400", "413", "415", "429", "503"),
            body="SessionCreate",
        ),
        "get": _operation(
            "List sessions",
            {"200": _json_response("A page of sessions.", "SessionList")},
            ("400", "503"),
            parameters=[
                _param("status", "query", _status_list(SESSION_STATUSES), "Only these statuses."),
                *PAGE,
            ],
        ),
    },
    "/sessions/{session_id}": {
        "parameters": [SESSION_ID],
        "get": _operation("One session", {"200": _json_response("The session.", "Session")}, READS),
        "delete": _operation(
            "Close a session: cancel its running and pending tasks, stop its Claude process",
            {
                "200": _json_response(
                    "The session, status closed; again on a closed one.", "Session"
                )
            },
            READS,
        ),
    },
    "/sessions/{session_id}/tasks": {
        "parameters": [SESSION_ID],
        "post": _operation(
            "Submit a task; it runs later, in turn",
            {
                "202": _json_response("The accepted task.", "Task", {"Location": LOCATION}),
                "200": _json_response(
                    "The task first accepted with this Idempotency-Key.",
                    "Task",
                    {"Location": LOCATION},
                ),
            },
            ("400", "404", "409", "413", "415", "429", "503"),
            parameters=[
                _param(
                    "Idempotency-Key",
                    "header",
                    {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_IDEMPOTENCY_KEY,
                        "pattern": f"^{IDEMPOTENCY_KEY}$",
                    },
                    "A retried submit with the same key returns the first task (200).",
                )
            ],
            body="TaskCreate",
        ),
        "get": _operation(
            "List the session's tasks",
            {"200": _json_response("A page of tasks.", "TaskList")},
            READS,
            parameters=[*TASK_FILTERS, *PAGE],
        ),
    },
    "/tasks": {
        "get": _operation(
            "List tasks",
            {"200": _json_response("A page of tasks.", "TaskList")},
            READS,
            parameters=[
                _param(
                    "session_id",
                    "query",
                    {"type": "string"},
                    "Only this session's tasks; an unknown session is 404.",
                ),
                *TASK_FILTERS,
                *PAGE,
            ],
        ),
    },
    "/tasks/{task_id}": {
        "parameters": [TASK_ID],
        "get": _operation(
            "One task, optionally held until it is terminal",
            {"200": _json_response("The task.", "Task")},
            READS,
            parameters=[
                _param(
                    "wait",
                    "query",
                    {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
                    "Hold the answer until the task is terminal or this many seconds pass. "
                    "Long-polls share the stream cap: past it, 503 with Retry-After.",
                )
            ],
        ),
        "delete": _operation(
            "Cancel a pending or running task",
            {
                "200": _json_response(
                    "The task, status cancelled; again on a cancelled one.", "Task"
                )
            },
            ("400", "404", "409", "503"),
        ),
    },
    "/tasks/{task_id}/events": {
        "parameters": [TASK_ID],
        "get": _operation(
            "The task's event log, as JSON or (Accept: text/event-stream) a live SSE stream",
            {
                "200": {
                    "description": "JSON: a page of the events after `after`, at most "
                    "`limit`, oldest first. SSE: each event as "
                    "`id: <seq>`, `event: <type>`, `data: <Event JSON>`; replays events after "
                    "Last-Event-ID (else `after`), follows live, sends comment lines "
                    "(`: keep-alive`) at least every 15 s and ends after the task's terminal "
                    "status event. "
                    "Streams and long-polls share a cap: past it, 503 with Retry-After.",
                    "content": {
                        JSON: {"schema": _ref("EventList")},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                }
            },
            READS,
            parameters=[
                _param(
                    "after",
                    "query",
                    {"type": "integer", "minimum": 0, "maximum": MAX_SEQ, "default": 0},
                    "Only events with a greater seq.",
                ),
                _param(
                    "limit",
                    "query",
                    {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_EVENT_LIMIT,
                        "default": MAX_EVENT_LIMIT,
                    },
                    f"JSON: page size, 1 to {MAX_EVENT_LIMIT}. Ignored by the SSE form, "
                    "but an invalid value is 400 in both.",
                ),
                _param(
                    "Last-Event-ID",
                    "header",
                    {"type": "string", "pattern": r"^\s*[0-9]+\s*$"},
                    "SSE: resume after this seq; takes precedence over `after`. Ignored by the "
                    "JSON form, but a malformed value is 400 in both.",
                ),
            ],
        ),
    },
    "/healthz": {
        "get": _operation(
            "Liveness", {"200": _json_response("The process serves.", "Health")}, (), public=True
        )
    },
    "/readyz": {
        "get": _operation(
            "Readiness: the database answers and the Claude CLI was found",
            {"200": _json_response("Ready, with the Claude CLI version.", "Ready")},
            ("503",),
        )
    },
    "/metrics": {
        "get": _operation(
            "Prometheus metrics",
            {
                "200": {
                    "description": "Prometheus text exposition format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
            (),
        )
    },
    "/openapi.json": {
        "get": _operation(
            "This document",
            {
                "200": {
                    "description": "The OpenAPI 3.1 document.",
                    "content": {JSON: {"schema": {"type": "object"}}},
                }
            },
            (),
        )
    },
}

OPERATION_IDS = {
    ("/sessions", "post"): "openSession",
    ("/sessions", "get"): "listSessions",
    ("/sessions/{session_id}", "get"): "getSession",
    ("/sessions/{session_id}", "delete"): "closeSession",
    ("/sessions/{session_id}/tasks", "post"): "submitTask",
    ("/sessions/{session_id}/tasks", "get"): "listSessionTasks",
    ("/tasks", "get"): "listTasks",
    ("/tasks/{task_id}", "get"): "getTask",
    ("/tasks/{task_id}", "delete"): "cancelTask",
    ("/tasks/{task_id}/events", "get"): "getTaskEvents",
    ("/healthz", "get"): "health",
    ("/readyz", "get"): "readiness",
    ("/metrics", "get"): "metrics",
    ("/openapi.json", "get"): "openapi",
}
for (_path, _method), _operation_id in OPERATION_IDS.items():
    PATHS[_path][_method]["operationId"] = _operation_id

# Links say which id in an answer feeds which call, for clients and for
# fuzzers that chain calls (schemathesis' stateful phase).
_SESSION_CALLS = ("getSession", "closeSession", "submitTask", "listSessionTasks")
_TASK_CALLS = ("getTask", "cancelTask", "getTaskEvents")
for _path, _status, _param_name, _targets in (
    ("/sessions", "201", "session_id", _SESSION_CALLS),
    ("/sessions/{session_id}/tasks", "202", "task_id", _TASK_CALLS),
    ("/sessions/{session_id}/tasks", "200", "task_id", _TASK_CALLS),
):
    PATHS[_path]["post"]["responses"][_status]["links"] = {
        _target: {"operationId": _target, "parameters": {_param_name: "$response.body#/id"}}
        for _target in _targets
    }

DESCRIPTION = """Run tasks (prompts) inside Claude Code sessions.

Every error has the body `{"error": {"code", "message", "details"}}`. Unknown
routes get 404 `not_found`; a method a route does not have gets 405
`method_not_allowed` with an `Allow` header. Responses are
`application/json; charset=utf-8` unless stated otherwise. Times are RFC 3339
in UTC with microseconds and `Z`. Lists are keyset-paginated. Every response
carries `X-Request-ID`, also found in the server's log line for the request:
the client's own if it sent one of 1 to 128 characters of `A-Z a-z 0-9 . _ : -`,
else a new one.
"""


def build_document(settings: Settings) -> dict[str, Any]:
    """The document for a server with these settings (token, command length, workspace)."""
    token_required = bool(settings.api_token)
    paths = copy.deepcopy(PATHS)
    schemas = copy.deepcopy(SCHEMAS)
    schemas["TaskCreate"]["properties"]["command"]["maxLength"] = settings.max_command_chars
    if settings.workspace_root:
        # A workdir that is accepted, so that clients and fuzzers have one to start from.
        workdir = schemas["SessionCreate"]["properties"]["workdir"]
        workdir["examples"] = [os.path.realpath(settings.workspace_root)]
    if not token_required:
        for item in paths.values():
            for operation in item.values():
                if isinstance(operation, dict):
                    operation["responses"].pop("401", None)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {"title": "aicli", "version": _version(), "description": DESCRIPTION},
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if token_required:
        document["components"]["securitySchemes"] = {
            "bearerAuth": {"type": "http", "scheme": "bearer"}
        }
        document["security"] = [{"bearerAuth": []}]
    return document


def _version() -> str:
    try:
        return metadata.version("aicli")
    except metadata.PackageNotFoundError:
        return "0.0.0"


class OpenApiResource:
    def __init__(self, settings: Settings) -> None:
        self._document = build_document(settings)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._document
