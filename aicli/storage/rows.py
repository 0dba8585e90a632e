"""Database rows to the frozen values of ``aicli.models``."""

from __future__ import annotations

from peewee import Model

from aicli.models import TASK_STATUSES, Event, Session, Task
from aicli.storage.schema import count_column


def session_from_row(row: Model) -> Session:
    return Session(
        id=row.id,
        status=row.status,
        workdir=row.workdir,
        model=row.model,
        permission_mode=row.permission_mode,
        allowed_tools=tuple(row.allowed_tools),
        disallowed_tools=tuple(row.disallowed_tools),
        append_system_prompt=row.append_system_prompt,
        max_turns=row.max_turns,
        metadata=dict(row.metadata),
        claude_session_id=row.claude_session_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_active_at=row.last_active_at,
        task_counts={status: getattr(row, count_column(status)) for status in TASK_STATUSES},
        total_cost_usd=row.total_cost_usd,
    )


def task_from_row(row: Model) -> Task:
    return Task(
        id=row.id,
        session_id=row.session_id,
        command=row.command,
        status=row.status,
        output=row.output,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        completed_at=row.completed_at,
        timeout_s=row.timeout_s,
        cost_usd=row.cost_usd,
        num_turns=row.num_turns,
        duration_ms=row.duration_ms,
        usage=row.usage,
        metadata=dict(row.metadata),
    )


def event_from_row(row: Model) -> Event:
    return Event(
        task_id=row.task_id, seq=row.seq, type=row.type, created_at=row.created_at, data=row.data
    )
