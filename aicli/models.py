"""The values aicli hands out: immutable snapshots of sessions, tasks and events.

They are frozen so that they can travel between actors and threads as Pykka
messages without anyone mutating a shared object.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PENDING = "pending"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
TASK_STATUSES = (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED)
TERMINAL_STATUSES = frozenset({COMPLETED, FAILED, CANCELLED})

SESSION_IDLE = "idle"
SESSION_BUSY = "busy"
SESSION_CLOSED = "closed"
SESSION_STATUSES = (SESSION_IDLE, SESSION_BUSY, SESSION_CLOSED)

PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions")

_id_lock = threading.Lock()
_last_id_ns = 0


def new_id() -> str:
    """A URL-safe id whose sort order is creation order.

    The first 16 hex digits are a strictly increasing nanosecond clock (per
    process), so ordering by id alone reproduces acceptance order even when two
    rows share a microsecond timestamp.
    """
    global _last_id_ns
    with _id_lock:
        now = max(time.time_ns(), _last_id_ns + 1)
        _last_id_ns = now
    return f"{now:016x}{os.urandom(8).hex()}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(value: datetime | None) -> str | None:
    """RFC 3339, UTC, microseconds, ``Z``: the one time format of the API.

    Built from ``isoformat``, and without converting values that are already
    UTC: a page of 50 tasks formats 150 times, and ``strftime`` made that a
    fifth of the request.
    """
    if value is None:
        return None
    if value.tzinfo is not None and value.utcoffset():
        value = value.astimezone(UTC)
    text = value.isoformat(timespec="microseconds")
    return (text[:-6] if value.tzinfo is not None else text) + "Z"


def _empty_counts() -> dict[str, int]:
    return {status: 0 for status in TASK_STATUSES}


@dataclass(frozen=True)
class SessionSettings:
    """What a client chose when opening a session: it shapes the Claude command line."""

    workdir: str
    model: str | None = None
    permission_mode: str | None = None
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    append_system_prompt: str | None = None
    max_turns: int | None = None


@dataclass(frozen=True)
class Session:
    id: str
    status: str
    workdir: str
    model: str | None = None
    permission_mode: str | None = None
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    append_system_prompt: str | None = None
    max_turns: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    claude_session_id: str | None = None
    process_alive: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_active_at: datetime | None = None
    task_counts: dict[str, int] = field(default_factory=_empty_counts)
    total_cost_usd: float = 0.0

    @property
    def settings(self) -> SessionSettings:
        return SessionSettings(
            workdir=self.workdir,
            model=self.model,
            permission_mode=self.permission_mode,
            allowed_tools=tuple(self.allowed_tools),
            disallowed_tools=tuple(self.disallowed_tools),
            append_system_prompt=self.append_system_prompt,
            max_turns=self.max_turns,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "workdir": self.workdir,
            "model": self.model,
            "permission_mode": self.permission_mode,
            "allowed_tools": list(self.allowed_tools),
            "disallowed_tools": list(self.disallowed_tools),
            "append_system_prompt": self.append_system_prompt,
            "max_turns": self.max_turns,
            "metadata": dict(self.metadata),
            "claude_session_id": self.claude_session_id,
            "process_alive": self.process_alive,
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
            "last_active_at": format_time(self.last_active_at),
            "task_counts": dict(self.task_counts),
            "total_cost_usd": self.total_cost_usd,
        }


@dataclass(frozen=True)
class Task:
    id: str
    session_id: str
    command: str
    status: str
    output: str | None = None
    error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    queue_position: int | None = None
    timeout_s: float | None = None
    cost_usd: float | None = None
    num_turns: int | None = None
    duration_ms: int | None = None
    usage: dict[str, int] | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "session_id": self.session_id,
            "command": self.command,
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "created_at": format_time(self.created_at),
            "started_at": format_time(self.started_at),
            "completed_at": format_time(self.completed_at),
            "queue_position": self.queue_position,
            "timeout_s": self.timeout_s,
            "cost_usd": self.cost_usd,
            "num_turns": self.num_turns,
            "duration_ms": self.duration_ms,
            "usage": None if self.usage is None else dict(self.usage),
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True)
class Event:
    task_id: str
    seq: int
    type: str
    created_at: datetime
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "type": self.type,
            "created_at": format_time(self.created_at),
            "data": self.data,
        }


@dataclass(frozen=True)
class Page:
    """One page of a keyset-paginated list."""

    items: list[Any]
    has_more: bool
    next_cursor: str | None


def status_data(task: Task) -> dict[str, Any]:
    """The data of a ``status`` event: the new status, and the error when there is one."""
    data: dict[str, Any] = {"status": task.status}
    if task.error:
        data["error"] = task.error
    return data
