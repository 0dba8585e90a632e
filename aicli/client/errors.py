"""The API's error bodies as the exceptions the runtime raises for the same codes.

A program written against ``Runtime`` catches ``SessionClosed`` or
``LimitExceeded``; the same program on the client must catch the same classes,
so each ``error.code`` of the contract maps to the runtime's class. The body's
own ``message`` and ``details`` are kept as the server wrote them, and so is
its ``code`` where several codes share one class (413 and 415 are
``InvalidRequest`` to a program, and the code still tells which).
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from aicli.contract import STATUS_CODES, ErrorBody
from aicli.errors import (
    AicliError,
    ApprovalDecided,
    BudgetExceeded,
    Conflict,
    CredentialsUnavailable,
    Forbidden,
    IdempotencyKeyReused,
    InvalidRequest,
    LimitExceeded,
    MisdirectedRequest,
    NotFound,
    PrincipalRevoked,
    SessionClosed,
    SessionNotFound,
    StorageLimitExceeded,
    TaskNotCancellable,
    TaskNotFound,
    Unauthorized,
    Unavailable,
)

CLASSES: dict[str, type[AicliError]] = {
    "invalid_request": InvalidRequest,
    "method_not_allowed": InvalidRequest,
    "payload_too_large": InvalidRequest,
    "storage_limit_exceeded": StorageLimitExceeded,
    "unsupported_media_type": InvalidRequest,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "misdirected_request": MisdirectedRequest,
    "budget_exceeded": BudgetExceeded,
    "not_found": NotFound,
    "session_not_found": SessionNotFound,
    "task_not_found": TaskNotFound,
    "conflict": Conflict,
    "approval_decided": ApprovalDecided,
    "session_closed": SessionClosed,
    "task_not_cancellable": TaskNotCancellable,
    "principal_revoked": PrincipalRevoked,
    "credentials_unavailable": CredentialsUnavailable,
    "idempotency_key_reused": IdempotencyKeyReused,
    "too_many_requests": LimitExceeded,
    "unavailable": Unavailable,
}
_decoder = msgspec.json.Decoder(ErrorBody)


def build(
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    *,
    retry_after: float | None = None,
    not_found: type[NotFound] = NotFound,
) -> AicliError:
    """The exception for ``code``, made without its class's own ``__init__``.

    The runtime's classes build their message from ids (``SessionNotFound(id)``);
    here the server's message is the one to keep, word for word. ``not_found``
    names the class a plain ``not_found`` means on the route asked (an approval's,
    a principal's).
    """
    cls = CLASSES.get(code, AicliError)
    if cls is NotFound:
        cls = not_found
    error = cls.__new__(cls)
    AicliError.__init__(error, message, details)
    if error.code != code:
        error.code = code
    if isinstance(error, LimitExceeded | Unavailable):
        error.retry_after = retry_after
    return error


def from_response(response: httpx.Response, *, not_found: type[NotFound] = NotFound) -> AicliError:
    """The error an answer of 400 or more stands for."""
    retry_after = _seconds(response.headers.get("Retry-After"))
    try:
        body = _decoder.decode(response.content).error
    except msgspec.MsgspecError:
        # Not our body (a proxy's page, say): the status alone tells what it means.
        code = STATUS_CODES.get(response.status_code, "internal_error")
        text = response.reason_phrase or "an error"
        message = f"The server answered {response.status_code} {text} without an error body."
        return build(code, message, retry_after=retry_after, not_found=not_found)
    return build(
        body.code, body.message, body.details, retry_after=retry_after, not_found=not_found
    )


def not_ours(where: object, error: Exception) -> AicliError:
    """A success answer that is not the API's (a proxy's page, another service on the port)."""
    return AicliError(f"The answer from {where} is not aicli's: {error}.")


def _seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds; the HTTP-date form is not worth a parser here."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
