"""What wraps the nouns in an answer: pages, the list of nodes, and the error body.

Lists are keyset-paginated pages, so that a client walking a long list sees each
row once even while rows are added; an error is always the same body, so that a
client reads ``error.code`` whatever went wrong, and the server and the client
agree (``STATUS_CODES``) on the code of an answer that has no such body.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from msgspec import Struct

from aicli.contract.resources import Event, Node

_VALUE = {"frozen": True, "kw_only": True}


class NodeList(Struct, **_VALUE):
    """``GET /nodes`` (1.1): every node, in one answer (there are a handful)."""

    data: list[Node]


T = TypeVar("T")


class Page(Struct, Generic[T], **_VALUE):
    """One page of a keyset-paginated list; pass ``next_cursor`` back for the next."""

    data: list[T]
    has_more: bool
    next_cursor: str | None


class EventPage(Struct, **_VALUE):
    """A page of a task's event log; continue with ``after=`` the last ``seq``."""

    data: list[Event]
    has_more: bool


class ErrorDetail(Struct, **_VALUE):
    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorBody(Struct, **_VALUE):
    error: ErrorDetail


# The ``error.code`` an HTTP status stands for when nothing more is known: the server
# gives it to the errors Falcon raises itself, a client to an answer without our body.
STATUS_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    402: "budget_exceeded",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    421: "misdirected_request",
    429: "too_many_requests",
    502: "unavailable",
    503: "unavailable",
    504: "unavailable",
}
