"""Driver rows (tuples in the column orders below) to the frozen values of ``aicli.models``.

A page of tasks converts 50 rows of 15 columns, so each conversion is kept to
what the values need: times and JSON parsed the cheap way (see ``fields``) and
the frozen dataclass filled in directly. Its generated ``__init__`` sets each
field through ``object.__setattr__`` (frozen), which took twice as long as
everything else a row costs; the values have no ``__post_init__`` to skip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from aicli.models import CANCELLED, COMPLETED, FAILED, PENDING, RUNNING, Event, Session, Task
from aicli.storage.fields import from_db_time, from_json_text

V = TypeVar("V")

TASK_COLUMNS = (
    "id, session_id, command, status, output, error, created_at, started_at, completed_at,"
    " timeout_s, cost_usd, num_turns, duration_ms, usage, metadata"
)
SESSION_COLUMNS = (
    "id, status, workdir, model, permission_mode, allowed_tools, disallowed_tools,"
    " append_system_prompt, max_turns, metadata, claude_session_id, created_at, updated_at,"
    " last_active_at, n_pending, n_running, n_completed, n_failed, n_cancelled, total_cost_usd"
)
EVENT_COLUMNS = "seq, type, created_at, data"


def _filled(cls: type[V], values: dict[str, Any]) -> V:
    made = object.__new__(cls)
    made.__dict__.update(values)
    return made


def _time(value: Any) -> Any:
    return None if value is None else from_db_time(value)


def task_from_row(row: Sequence[Any]) -> Task:
    (
        task_id, session_id, command, status, output, error, created_at, started_at,
        completed_at, timeout_s, cost_usd, num_turns, duration_ms, usage, metadata,
    ) = row  # fmt: skip
    return _filled(
        Task,
        {
            "id": task_id,
            "session_id": session_id,
            "command": command,
            "status": status,
            "output": output,
            "error": error,
            "created_at": from_db_time(created_at),
            "started_at": _time(started_at),
            "completed_at": _time(completed_at),
            "queue_position": None,
            "timeout_s": timeout_s,
            "cost_usd": cost_usd,
            "num_turns": num_turns,
            "duration_ms": duration_ms,
            "usage": None if usage is None else from_json_text(usage),
            "metadata": from_json_text(metadata),
        },
    )


def session_from_row(row: Sequence[Any]) -> Session:
    (
        session_id, status, workdir, model, permission_mode, allowed_tools, disallowed_tools,
        append_system_prompt, max_turns, metadata, claude_session_id, created_at, updated_at,
        last_active_at, n_pending, n_running, n_completed, n_failed, n_cancelled, total_cost_usd,
    ) = row  # fmt: skip
    return _filled(
        Session,
        {
            "id": session_id,
            "status": status,
            "workdir": workdir,
            "model": model,
            "permission_mode": permission_mode,
            "allowed_tools": tuple(from_json_text(allowed_tools)),
            "disallowed_tools": tuple(from_json_text(disallowed_tools)),
            "append_system_prompt": append_system_prompt,
            "max_turns": max_turns,
            "metadata": from_json_text(metadata),
            "claude_session_id": claude_session_id,
            "process_alive": False,
            "created_at": from_db_time(created_at),
            "updated_at": from_db_time(updated_at),
            "last_active_at": _time(last_active_at),
            "task_counts": {
                PENDING: n_pending,
                RUNNING: n_running,
                COMPLETED: n_completed,
                FAILED: n_failed,
                CANCELLED: n_cancelled,
            },
            "total_cost_usd": total_cost_usd,
        },
    )


def event_from_row(task_id: str, row: Sequence[Any]) -> Event:
    seq, kind, created_at, data = row
    return _filled(
        Event,
        {
            "task_id": task_id,
            "seq": seq,
            "type": kind,
            "created_at": from_db_time(created_at),
            "data": from_json_text(data),
        },
    )
