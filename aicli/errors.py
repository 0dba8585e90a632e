"""The one exception hierarchy of aicli.

Every failure a caller can act on is an ``AicliError`` with a stable ``code``
(the ``error.code`` of the HTTP contract) and a one-sentence ``message`` for
people. The HTTP layer maps these classes to status codes in one place
(``aicli.http.errors``); the actors and the store never think about HTTP.
"""

from __future__ import annotations

from typing import Any


class AicliError(Exception):
    """Base of every error aicli raises on purpose."""

    code = "internal_error"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidRequest(AicliError):
    code = "invalid_request"


class Unauthorized(AicliError):
    """No valid bearer token where one is needed (HTTP 401 with a Bearer challenge)."""

    code = "unauthorized"


class Forbidden(AicliError):
    """A route or a filter only admins may use, asked for by a user (HTTP 403)."""

    code = "forbidden"


class MisdirectedRequest(AicliError):
    """The request's ``Host`` names no server this one is (HTTP 421): a page whose name was
    pointed at this machine (DNS rebinding), or a name to add to ``allowed_hosts``."""

    code = "misdirected_request"


class BudgetExceeded(AicliError):
    """The principal's budget is spent: no new task is taken (HTTP 402)."""

    code = "budget_exceeded"


class StorageLimitExceeded(AicliError):
    """A submit would take the principal past its ``max_stored_bytes`` (HTTP 413)."""

    code = "storage_limit_exceeded"


class NotFound(AicliError):
    code = "not_found"


class SessionNotFound(NotFound):
    code = "session_not_found"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"No session with id '{session_id}'.", {"session_id": session_id})


class TaskNotFound(NotFound):
    code = "task_not_found"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"No task with id '{task_id}'.", {"task_id": task_id})


class PrincipalNotFound(NotFound):
    def __init__(self, principal_id: str) -> None:
        super().__init__(f"No principal with id '{principal_id}'.", {"principal_id": principal_id})


class ApprovalNotFound(NotFound):
    def __init__(self, approval_id: str) -> None:
        super().__init__(f"No approval with id '{approval_id}'.", {"approval_id": approval_id})


class Conflict(AicliError):
    code = "conflict"


class ApprovalDecided(Conflict):
    """The approval was decided already (by a person, a rule, its timeout or the system)."""

    code = "approval_decided"

    def __init__(self, approval_id: str, status: str, decided_by: str | None) -> None:
        super().__init__(
            f"Approval '{approval_id}' is already {status} (decided by {decided_by}).",
            {"approval_id": approval_id, "status": status, "decided_by": decided_by},
        )


class SessionClosed(Conflict):
    code = "session_closed"

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"Session '{session_id}' is closed and takes no more tasks.",
            {"session_id": session_id},
        )


class TaskNotCancellable(Conflict):
    code = "task_not_cancellable"

    def __init__(self, task_id: str, status: str) -> None:
        super().__init__(
            f"Task '{task_id}' is already {status} and cannot be cancelled.",
            {"task_id": task_id, "status": status},
        )


class IdempotencyKeyReused(AicliError):
    """An ``Idempotency-Key`` sent again with another request than the one it was first used
    with (HTTP 422): the first task is not this request's, and a new one would act twice."""

    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was used with another request (another body or session);"
            " send that request again, or this one with a new key.",
            {"field": "Idempotency-Key"},
        )


class LimitExceeded(AicliError):
    """A configured limit is full; ``retry_after`` (seconds) tells clients when to retry."""

    code = "too_many_requests"

    def __init__(
        self, message: str, retry_after: int = 1, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details)
        self.retry_after = retry_after


class Unavailable(AicliError):
    """The service cannot answer now (shutting down, an actor did not answer in time)."""

    code = "unavailable"

    def __init__(
        self, message: str, retry_after: int | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details)
        self.retry_after = retry_after


class ClaudeNotFound(Unavailable):
    """No Claude Code CLI could be found; the message names how to install it."""


class SandboxUnavailable(Unavailable):
    """Sessions are to run sandboxed and the sandbox cannot start on this machine; the message
    names what is missing, how to install it, and how to turn the sandbox off knowingly."""

    code = "sandbox_unavailable"


class StorageError(AicliError):
    """The database failed in a way a retry did not cure."""


class IllegalTransition(AicliError):
    """A bug: code tried to move a task along an edge the state machine does not have."""


class NotOwner(AicliError):
    """This node's claim on a session is no longer the session's: another claim came after it.

    Raised by the store for a write of a stale claim (its epoch no longer matches),
    which therefore changed nothing; the node lets the session go.
    """


class DatabaseUnavailable(Unavailable, StorageError):
    """The connection to the database was lost and a fresh one did not cure it.

    An outage, not a bug: clients get 503 and ``Retry-After``. Still a
    ``StorageError``, so code that handles a failing database handles this too.
    """

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, 1, details)


class AlreadyServing(AicliError):
    """Another live aicli server uses this SQLite file; two would reap each other's work."""

    code = "already_serving"
