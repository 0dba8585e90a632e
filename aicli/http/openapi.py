"""The OpenAPI 3.1 document served at ``/openapi.json``: schemas from the contract, paths by hand.

``msgspec`` writes the schemas from the ``aicli.contract`` structs that decode
requests and encode responses, and the query parameters from those that read them,
so nothing is enforced one way and documented another. What no schema can say
(a workdir must exist here, ids and cursors must be ones this server issued, a
body has a size) the 400, 404 and 413 responses say.
"""

from __future__ import annotations

import os
import re
from http import HTTPStatus
from typing import Any

import falcon
import msgspec

from aicli import __version__
from aicli import contract as c
from aicli.http.sessions import IDEMPOTENCY_KEY, MAX_IDEMPOTENCY_KEY
from aicli.settings import Settings

# Two lines an operation. First its id, method and path; success statuses and their schema
# (or media types); error statuses (and 413 and 415 with a body, 415 and 403 on DELETE, 403
# on POST, 401 with a token but on /healthz, 421 and 500 always); the struct of its query
# parameters (XQuery, and XHeaders if there is one), the Idempotency-Key header (key) or
# the Prefer header (prefer); the body's struct. Then its summary. Path parameters come
# from the path.
OPERATIONS = """
openSession POST /sessions 201:Session 400,413,429,503 SessionCreate
  Open a session: a Claude Code conversation in a working directory.
listSessions GET /sessions 200:SessionPage 400,403,503 SessionListQuery
  List sessions.
getSession GET /sessions/{session_id} 200:Session 400,404,503
  One session.
closeSession DELETE /sessions/{session_id} 200:Session 400,404,503
  Close a session: cancel its tasks, stop its Claude process (closed already: 200 again).
submitTask POST /sessions/{session_id}/tasks 202,200:Task 400,402,404,409,413,422,429,503 key \
prefer TaskSubmit
  Submit a task to run in turn (200: it ended within `Prefer: wait=N`, or it is the task first \
accepted with this Idempotency-Key).
listSessionTasks GET /sessions/{session_id}/tasks 200:TaskPage 400,404,503 SessionTaskListQuery
  List the session's tasks.
listTasks GET /tasks 200:TaskPage 400,403,404,503 TaskListQuery
  List tasks.
getTask GET /tasks/{task_id} 200:Task 400,404,503 TaskWaitQuery
  One task; with `wait`, once it is terminal or the wait is over.
cancelTask DELETE /tasks/{task_id} 200:Task 400,404,409,503
  Cancel a pending or running task (cancelled already: 200 again).
getTaskEvents GET /tasks/{task_id}/events 200:EventPage,text/event-stream 400,404,503 EventQuery
  The event log: JSON pages after `after`, or (Accept: text/event-stream) a live SSE stream.
listApprovals GET /approvals 200:ApprovalPage 400,403,404,503 ApprovalListQuery
  List approvals: tool uses and questions that waited (or wait) for a person.
getApproval GET /approvals/{approval_id} 200:Approval 400,404,503
  One approval.
decideApproval POST /approvals/{approval_id} 200:Approval 400,404,409,503 ApprovalDecision
  Decide a pending approval: allow (perhaps with changed input, answers, or remembered for \
the session) or deny with a message (decided already: 409 approval_decided).
createPrincipal POST /principals 201:Principal 400,403,503 PrincipalCreate
  Create a principal (admins only): a user or an admin with a bearer token of its own, shown \
only in this answer. An open service makes none (403): its first is made with `aicli \
principals create`.
listPrincipals GET /principals 200:PrincipalPage 400,403,503 PrincipalListQuery
  List principals, revoked ones too (admins only).
getPrincipal GET /principals/{principal_id} 200:Principal 400,404,503
  One principal (a user: only itself; any other id is unknown to it).
revokePrincipal DELETE /principals/{principal_id} 200:Principal 400,403,404,503
  Revoke a principal (admins only): its token stops working at once, its sessions close and its \
streams and long-polls end (revoked already: 200 again).
listNodes GET /nodes 200:NodeList 400,403,503
  The servers sharing this database whose lease lasts (admins only).
getMe GET /me 200:Principal 400,503
  The caller: the principal whose token this is (`root` for the configured token, and in an \
open service).
health GET /healthz 200:Health
  Liveness: the process serves.
readiness GET /readyz 200:Ready 503
  Readiness: the database answers and the Claude CLI was found.
metrics GET /metrics 200:text/plain 403
  Prometheus metrics, in the text format (admins only: every tenant's activity).
openapi GET /openapi.json 200:OpenApi
  This document.
"""
ERRORS = {  # each starts with the codes it carries
    "400": "invalid_request: the schema refuses the body, a parameter or a header; a query "
    "parameter is unknown or repeated; or this server refuses a value of the right form: a "
    "`workdir` or a principal's `workspace_root` that is no existing directory (inside the "
    "workspace root, if set; a workdir inside its owner's too), a `cursor` it did not issue, a "
    "decision that does not fit its approval (`answers` but to the questions of a `question`, "
    "and required there; `updated_input`, `answers` or `remember` with `deny`; `remember` with "
    "`updated_input` or on a question). A request that is not HTTP gets a plain-text 400.",
    "401": "unauthorized: a missing, wrong or revoked bearer token.",
    "402": "budget_exceeded: the caller's `limits.budget_usd` is spent; no task is taken.",
    "403": "forbidden: a route or a filter (`owner`) only admins may use (`/metrics` too), "
    "called by a user; a request that changes something sent by a web page of another "
    "origin (its `Origin` is not this server's, or `Sec-Fetch-Site` is `cross-site` or "
    "`same-site`); `POST /principals` on an open service (the first principal is made with "
    "`aicli principals create`).",
    "404": "session_not_found, task_not_found, not_found: no such id (or route), or one that is "
    "not the caller's to see (a user's view: the sessions it opened, their tasks and "
    "approvals, itself).",
    "405": "method_not_allowed: the route has no such method; `Allow` names those it has.",
    "409": "session_closed, task_not_cancellable, approval_decided: the session, the task or "
    "the approval is past it.",
    "413": "payload_too_large, storage_limit_exceeded: the body is over the size limit, whatever "
    "it holds; or (a submit, an open) the task or the session would take what its owner's "
    "sessions store past its `limits.max_stored_bytes`.",
    "415": "unsupported_media_type: a body (POST, PUT, PATCH, DELETE) whose `Content-Type` is "
    "not `application/json` (parameters such as `charset` allowed) or `application/*+json`; "
    "a body with no `Content-Type` too. Nothing is read or done.",
    "421": "misdirected_request: the `Host` header names no host of this server (`localhost`, "
    "a loopback address, the address it listens on, the host of its node URL, or one of its "
    "`allowed_hosts`), or there is none; nothing is read or done.",
    "422": "idempotency_key_reused: the Idempotency-Key was first used with another request "
    "(another body, or another session); the first task stays the key's.",
    "429": "too_many_requests: too many open sessions, or pending tasks in the session (the "
    "server's limits, or the caller's own `limits`).",
    "500": "internal_error: a server fault; the details are in the server's log only.",
    "503": "unavailable: shutting down, the database is down, or no slot is free for a wait.",
}
ERROR_CODES = [code for text in ERRORS.values() for code in text.split(": ")[0].split(", ")]
RETRY_AFTER = {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
HEADERS = {
    "401": {"WWW-Authenticate": {"required": True, "schema": {"const": "Bearer"}}},
    "429": {"Retry-After": {**RETRY_AFTER, "required": True}},
    "503": {"Retry-After": RETRY_AFTER},
    "POST": {"Location": {"required": True, "schema": {"type": "string"}}},
}
PREFERENCE_APPLIED = {
    "description": "`wait=N` when the answer waited for the task to end (RFC 7240).",
    "schema": {"type": "string", "pattern": "^wait=[0-9]+$"},
}
# Which calls take the id of an answer: for clients, and for fuzzers that chain calls.
LINKS = {
    "Session": ("session_id", "getSession closeSession submitTask listSessionTasks listTasks"),
    "Task": ("task_id", "getTask cancelTask getTaskEvents"),
    "Principal": ("principal_id", "getPrincipal revokePrincipal"),
    "Approval": ("approval_id", "getApproval decideApproval"),
}
JSON = "application/json"
REF = "#/components/schemas/{name}"
RESPONSES = (
    c.Session,
    c.Page[c.Session],
    c.Task,
    c.Page[c.Task],
    c.EventPage,
    c.Principal,
    c.Page[c.Principal],
    c.Approval,
    c.Page[c.Approval],
    c.NodeList,
    c.ErrorBody,
)
REQUESTS = (c.SessionCreate, c.TaskSubmit, c.PrincipalCreate, c.ApprovalDecision)
# msgspec names a component after its type; no component refers to these four.
NAMES = {
    "Page_Session_": "SessionPage",
    "Page_Task_": "TaskPage",
    "Page_Principal_": "PrincipalPage",
    "Page_Approval_": "ApprovalPage",
    "ErrorBody": "Error",
}
# A struct both taken and answered (a principal's limits) has two schemas: every field is
# written in an answer, and may be left out of a request, whose schema gets this suffix.
REQUEST_SUFFIX = "Create"
SERVICE = {  # the bodies of /healthz and /readyz
    "Health": {"status": {"const": "ok"}},
    "Ready": {
        "status": {"const": "ready"},
        "database": {"const": "ok"},
        "claude": {"type": "string"},
        "node": {"type": "string"},
        "sandbox": {"enum": ["on", "off"]},
    },
}
ID = {"type": "string", "pattern": c.ID}
KEY = {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY, "pattern": f"^{IDEMPOTENCY_KEY}$"}
BODIES = tuple(kind.__name__ for kind in REQUESTS)
AT = {"query": "Query", "header": "Headers"}
CHANGES = frozenset({"POST", "DELETE"})


def _param(at: str, name: str, text: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": at, "required": at == "path", "description": text, "schema": schema}


def _params(token: str) -> list[dict[str, Any]]:
    """The fields of struct ``token`` (and of its Headers twin) as parameters, or the key."""
    if token == "key":
        text = "A retry of the same request gets the first task; another request with it, 422."
        return [_param("header", "Idempotency-Key", text, **KEY)]
    if token == "prefer":
        text = (
            "`wait=N` (N 0–60): answer once the task is terminal (200), or after N seconds "
            "(202 as without it). A value that cannot be used is ignored (RFC 7240)."
        )
        return [_param("header", "Prefer", text, type="string")]
    kinds = [(at, getattr(c, token.removesuffix("Query") + end, None)) for at, end in AT.items()]
    found = [
        (at, n, dict(s)) for at, kind in kinds if kind for n, s in c.query_schemas(kind).items()
    ]
    return [_param(at, n, s.pop("description"), **s) for at, n, s in found]


def _components(*kinds: Any) -> dict[str, Any]:
    return msgspec.json.schema_components(kinds, ref_template=REF)[1]


def _renamed(node: Any, old: str, new: str) -> Any:
    """``node`` with each reference to schema ``old`` made one to ``new``."""
    if isinstance(node, dict):
        if node.get("$ref") == REF.format(name=old):
            return {**node, "$ref": REF.format(name=new)}
        return {key: _renamed(value, old, new) for key, value in node.items()}
    if isinstance(node, list):
        return [_renamed(value, old, new) for value in node]
    return node


def _requests(answered: dict[str, Any]) -> dict[str, Any]:
    """The schemas of the request bodies; those of a struct also answered renamed."""
    found = _components(*REQUESTS)
    for name in [n for n in found if n in answered and found[n] != answered[n]]:
        found = _renamed(found, name, name + REQUEST_SUFFIX)
        found[name + REQUEST_SUFFIX] = found.pop(name)
    return found


def schemas(settings: Settings) -> dict[str, Any]:
    """Requests as the decoder takes them, responses as the encoder writes them: every field.

    msgspec counts a field with a default as optional, which it is in a request only.
    """
    found = {NAMES.get(name, name): schema for name, schema in _components(*RESPONSES).items()}
    found.update({name: {"type": "object", "properties": p} for name, p in SERVICE.items()})
    for schema in found.values():
        for field in schema.get("properties", {}).values():
            field.pop("default", None)
        if "properties" in schema:
            schema.update(required=list(schema["properties"]), additionalProperties=False)
    found.update(_requests(found), OpenApi={"type": "object"})
    found["ErrorDetail"]["properties"]["code"]["enum"] = ERROR_CODES
    command = found["TaskSubmit"]["properties"]["command"]
    command["maxLength"] = min(command["maxLength"], settings.max_command_chars)
    if settings.workspace_root:  # a workdir that is accepted, for clients and fuzzers
        root = os.path.realpath(settings.workspace_root)
        found["SessionCreate"]["properties"]["workdir"]["examples"] = [root]
        found["PrincipalCreate"]["properties"]["workspace_root"]["examples"] = [root]
    return found


def _content(names: str) -> dict[str, Any]:
    """A schema's name stands for JSON of that schema, a media type for text."""
    text, ref = {"type": "string"}, {"$ref": REF.format(name=names.split(",")[0])}
    return {
        n if "/" in n else JSON: {"schema": text if "/" in n else ref} for n in names.split(",")
    }


def _response(description: str, names: str, headers: dict[str, Any]) -> dict[str, Any]:
    found = {"description": description, "headers": headers, "content": _content(names)}
    if names in LINKS:
        name, targets = LINKS[names]
        link = {"parameters": {name: "$response.body#/id"}}
        found["links"] = {target: {"operationId": target, **link} for target in targets.split()}
    return found


def _responses(ok: str, method: str, errors: set[str]) -> dict[str, Any]:
    statuses, names = ok.split(":")
    found = {
        status: _response(HTTPStatus(int(status)).phrase, names, HEADERS.get(method, {}))
        for status in statuses.split(",")
    }
    for status in sorted(errors):
        # Waitress answers what is not HTTP with a plain-text 400, before the app sees it.
        media = "Error,text/plain" if status == "400" else "Error"
        found[status] = _response(ERRORS[status], media, HEADERS.get(status, {}))
    return found


def _article(word: str) -> str:
    return "An" if word[0] in "aeiou" else "A"


def _operation(
    line: str, summary: str, settings: Settings, secured: bool
) -> tuple[str, str, dict[str, Any]]:
    name, method, path, ok, *rest = line.split()
    body = next((token for token in rest if token in BODIES), None)
    errors = {code for token in rest if token[0].isdigit() for code in token.split(",")} | {"500"}
    errors |= {"413", "415"} if body else set()
    errors |= {"403"} if method in CHANGES else set()  # sent by a page of another origin
    errors |= {"415"} if method == "DELETE" else set()  # a body of another type
    errors |= {"421"}
    errors |= {"401"} if secured and path != "/healthz" else set()
    ids = [
        _param("path", i, f"{_article(i)} {i[:-3]} id.", **ID) for i in re.findall(r"{(\w+)}", path)
    ]
    found = {
        "operationId": name,
        "summary": summary.strip(),
        "parameters": ids + [p for t in rest if t[0].isalpha() and t != body for p in _params(t)],
        # A POST to a collection makes something there (Location); one to an item acts on it.
        "responses": _responses(ok, "ITEM" if path.endswith("}") else method, errors),
    }
    if body:
        size = f"A JSON object of at most {settings.max_body_bytes} bytes."
        found["requestBody"] = {"required": True, "description": size, "content": _content(body)}
    if path == "/healthz":
        found["security"] = []
    if "prefer" in rest:
        ok_200 = found["responses"]["200"]
        ok_200["headers"] = {**ok_200["headers"], "Preference-Applied": PREFERENCE_APPLIED}
    return path, method.lower(), found


def build_document(settings: Settings, *, secured: bool | None = None) -> dict[str, Any]:
    """The document of a server with these settings: its token, limits and workspace root.

    ``secured``: whether callers need a bearer token; by default, whether one is configured.
    """
    secured = bool(settings.api_token) if secured is None else secured
    paths: dict[str, Any] = {}
    lines = OPERATIONS.strip().splitlines()
    for line, summary in zip(lines[::2], lines[1::2], strict=True):
        path, method, operation = _operation(line, summary, settings, secured)
        paths.setdefault(path, {})[method] = operation
    components: dict[str, Any] = {"schemas": schemas(settings)}
    document = {
        "openapi": "3.1.0",
        "info": {"title": "aicli", "version": __version__},
        "paths": paths,
        "components": components,
    }
    if secured:
        components["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearerAuth": []}]
    return document


class OpenApiResource:
    """The document as the caller finds the service: open, or guarded by bearer tokens.

    A service started without a token is open only until a principal exists; from then on
    every caller has a token (``req.context.principal``), and the document says so (401).
    """

    def __init__(self, settings: Settings) -> None:
        self._open = build_document(settings)
        self._secured = build_document(settings, secured=True)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        secured = req.context.get("principal") is not None
        resp.media = self._secured if secured else self._open
