"""Query parameters (and the one header read like them): each route's as a struct.

A route names the parameters it takes by its struct, so that a misspelt filter is
refused instead of ignored (``aicli.http.query``), and ``codec.query`` reads them
with the same bounds the OpenAPI document shows. A pattern in ``extra_json_schema``
is documented only: ``aicli.validation`` reads those fields (a comma list, RFC 3339
as clients write it), and ids are looked up, not matched.

A list's struct travels as it is from the query string (or the Python client, or an
embedder's keywords, through ``given``) past the runtime, which only narrows its
``owner`` to what the caller may see, to the store's list method, which turns each
field into its condition. So a new filter is a field here and its condition there
(``aicli/storage/<noun>.py``); ``tests/test_list_queries.py`` sends every field.
"""

from __future__ import annotations

import functools
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

from aicli.contract.enums import ApprovalStatus, SessionStatus, TaskStatus

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# A page of an event log: events are small and read in order, so pages can be long.
MAX_EVENT_LIMIT = 1000
MAX_WAIT_S = 60.0
# Fits the database's 32-bit integer columns; larger numbers are refused, not stored.
MAX_SEQ = 2**31 - 1
ORDERS = ("desc", "asc")
ID = "^[A-Za-z0-9_-]{1,64}$"
CURSOR = "^[A-Za-z0-9_-]{1,200}$"  # what aicli.storage.paging takes
# What validation.parse_time reads: RFC 3339 (whose format says which days exist), bar the year
# 0 and the two days that an offset can push out of the years 1 to 9999.
TIME = (
    r"^(?!0000|0001-01-01|9999-12-31)[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]"
    r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)


def _statuses(kind: type[StrEnum]) -> dict[str, Any]:
    """The documented pattern of a comma list of ``kind``'s values.

    Documented only: ``validation.parse_statuses`` reads the list, and strips any
    whitespace around an item; the pattern allows the ASCII blanks, on which the
    ECMAScript regexes of JSON Schema and Python agree.
    """
    one = rf"[ \t]*({'|'.join(kind)})[ \t]*"
    return {"pattern": f"^{one}(,{one})*$"}


def _since(text: str) -> Any:
    return Annotated[
        str, Meta(description=text, extra_json_schema={"format": "date-time", "pattern": TIME})
    ]


Limit = Annotated[
    int,
    Meta(
        ge=1,
        le=MAX_LIMIT,
        description="The most rows a page holds (1.2: fewer once they hold about 4 MiB of"
        " text; has_more and next_cursor then go on).",
    ),
]
Cursor = Annotated[
    str,
    Meta(
        min_length=1,
        description="The next_cursor of the page before.",
        extra_json_schema={"pattern": CURSOR},
    ),
]
Order = Annotated[Literal["desc", "asc"], Meta(description="desc: newest first.")]
TaskStatuses = Annotated[
    str, Meta(description="Only tasks in these statuses.", extra_json_schema=_statuses(TaskStatus))
]
After = _since("Only tasks created after this.")
Before = _since("Only tasks created before this.")
Seq = Annotated[int, Meta(ge=0, le=MAX_SEQ)]

_QUERY = {"forbid_unknown_fields": True, "frozen": True, "kw_only": True}


# 1.1: admins may narrow lists to one principal's work (a user's are its own anyway).
Owner = Annotated[
    str,
    Meta(
        description="Only the work of this principal (admins; a user may name only itself).",
        pattern=ID,
    ),
]


class SessionListQuery(Struct, **_QUERY):
    """``GET /sessions``."""

    status: (
        Annotated[str, Meta(description="Only these.", extra_json_schema=_statuses(SessionStatus))]
        | None
    ) = None
    owner: Owner | None = None
    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor | None = None
    order: Order = ORDERS[0]


class ApprovalListQuery(Struct, **_QUERY):
    """``GET /approvals`` (1.1)."""

    session_id: (
        Annotated[str, Meta(description="Only this session's.", extra_json_schema={"pattern": ID})]
        | None
    ) = None
    task_id: (
        Annotated[str, Meta(description="Only this task's.", extra_json_schema={"pattern": ID})]
        | None
    ) = None
    status: (
        Annotated[str, Meta(description="Only these.", extra_json_schema=_statuses(ApprovalStatus))]
        | None
    ) = None
    owner: Owner | None = None
    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor | None = None
    order: Order = ORDERS[0]


class PrincipalListQuery(Struct, **_QUERY):
    """``GET /principals`` (1.1): pages only."""

    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor | None = None
    order: Order = ORDERS[0]


class SessionTaskListQuery(Struct, **_QUERY):
    """``GET /sessions/{id}/tasks``."""

    status: TaskStatuses | None = None
    created_after: After | None = None
    created_before: Before | None = None
    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor | None = None
    order: Order = ORDERS[0]


class TaskListQuery(Struct, **_QUERY):
    """``GET /tasks``."""

    session_id: (
        Annotated[
            str, Meta(description="Only this session's tasks.", extra_json_schema={"pattern": ID})
        ]
        | None
    ) = None
    status: TaskStatuses | None = None
    owner: Owner | None = None
    created_after: After | None = None
    created_before: Before | None = None
    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor | None = None
    order: Order = ORDERS[0]


class TaskWaitQuery(Struct, **_QUERY):
    """``GET /tasks/{id}``: seconds to hold the answer until the task is terminal."""

    wait: Annotated[float, Meta(ge=0, le=MAX_WAIT_S, description="Seconds to wait.")] = 0.0


class EventQuery(Struct, **_QUERY):
    """``GET /tasks/{id}/events``: checked in either form; only JSON pages by ``limit``."""

    after: Annotated[Seq, Meta(description="Only events with a greater seq.")] = 0
    limit: Annotated[
        int,
        Meta(
            ge=1,
            le=MAX_EVENT_LIMIT,
            description="JSON: the most events a page holds (1.2: fewer once their data is"
            " about 4 MiB; has_more then says so).",
        ),
    ] = MAX_EVENT_LIMIT


class EventHeaders(Struct, rename={"last_event_id": "Last-Event-ID"}, **_QUERY):
    """``GET /tasks/{id}/events``: a stream resumes after this seq."""

    last_event_id: Annotated[Seq, Meta(description="SSE: resume after this seq.")] | None = None


Q = TypeVar("Q", bound=Struct)


def given(kind: type[Q], query: Q | None, fields: dict[str, Any]) -> Q:
    """``query``, or one of ``kind`` built from its fields given as keywords.

    The keyword form of every list (an embedder's ``list_tasks(status=[...])``), in one
    place. msgspec does not check a struct's types when it is built: the store reads a
    status list or a ``datetime`` as it reads the wire's text, and refuses what is
    neither with the same error. An unknown keyword is a ``TypeError``, as it always was.
    """
    return kind(**fields) if query is None else query


@functools.cache
def query_schemas(kind: type) -> dict[str, dict[str, Any]]:
    """The JSON Schema of each field of a query struct as one parameter's, without ``null``.

    msgspec writes a struct's schema, not its fields' one by one; the OpenAPI document
    needs each parameter's, and the wording of a refused parameter its bounds.
    """
    _, components = msgspec.json.schema_components([kind])
    found = {}
    for name, schema in components[kind.__name__]["properties"].items():
        options = [o for o in schema.get("anyOf", [schema]) if o.get("type") != "null"]
        found[name] = {
            **options[0],
            **({} if schema.get("default") is None else {"default": schema["default"]}),
        }
    return found
