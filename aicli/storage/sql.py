"""Pieces of SQL and checks that several repositories share.

Each repository keeps the statements it runs beside it; what is here is what more
than one of them needs to agree on: the claim check, the one lock order, the
placeholders, what a missing task or a stale claim raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from aicli.errors import InvalidRequest, NotOwner, TaskNotFound
from aicli.storage.engine import Engine

# A claim's writes name its epoch: a statement of a claim that another came after matches no row.
EPOCH_OF_TASK = "(SELECT owner_epoch FROM sessions WHERE sessions.id = tasks.session_id)"
TASK_EXISTS = "SELECT 1 FROM tasks WHERE id = ?"
TASK_STATUS = "SELECT status FROM tasks WHERE id = ?"
# Every call that moves a task locks its session's row first, as a start and a close
# do: one lock order, so PostgreSQL never has two of them wait on each other.
_LOCK_SESSION_OF_TASK = (
    "SELECT id FROM sessions WHERE id = (SELECT session_id FROM tasks WHERE id = ?) FOR UPDATE"
)


def marks(count: int) -> str:
    return ", ".join("?" * count)


def where(conditions: Sequence[str]) -> str:
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def for_update(engine: Engine) -> str:
    """The row lock a PostgreSQL write takes first; SQLite's one write lock needs none."""
    return " FOR UPDATE" if engine.is_postgres else ""


def lock_session_of_task(engine: Engine, task_id: str) -> None:
    """Inside a write: lock the task's session row (PostgreSQL), the one lock order."""
    if engine.is_postgres:  # SQLite's one write lock already orders every writer
        engine.execute(_LOCK_SESSION_OF_TASK, (task_id,))


def require_task(engine: Engine, task_id: str) -> None:
    """Inside a transaction: ``TaskNotFound`` unless the task exists."""
    if engine.execute(TASK_EXISTS, (task_id,)).fetchone() is None:
        raise TaskNotFound(task_id)


def aware(value: datetime | None, field: str) -> datetime | None:
    if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
        raise InvalidRequest(f"'{field}' must be a time with a UTC offset.", {"field": field})
    return value


def not_owner(subject: str, epoch: int) -> NotOwner:
    return NotOwner(
        f"The claim {epoch} on the session of {subject} has been taken over by a later one.",
        {"epoch": epoch},
    )
