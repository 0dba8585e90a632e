"""How a task ends: its outcome recorded, with all that goes with it, in one commit.

Running a task is the session actor's; recording what came of it is here. An end
writes the task's outcome, its events, the move of its session's counters (and the
session back to idle), the end of approvals its turn left pending, and its
``status`` event together, so no reader sees one without the others. Each move is
``UPDATE ... WHERE status = ?``: the check and the write are one statement, so two
writers cannot both win.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import msgspec

from aicli.contract import TERMINAL_STATUSES, SessionStatus, Task, TaskStatus, utcnow
from aicli.errors import IllegalTransition, TaskNotFound
from aicli.storage import transitions, usage
from aicli.storage.approvals import Approvals
from aicli.storage.approvals import event_of as approval_event
from aicli.storage.counters import count_move
from aicli.storage.ended import EndedTasks
from aicli.storage.engine import Engine
from aicli.storage.events import Entries, Events, checked
from aicli.storage.fields import to_db_float, to_db_time, to_json_text
from aicli.storage.rows import TASK_COLUMNS, task_from_row
from aicli.storage.sql import (
    EPOCH_OF_TASK,
    TASK_STATUS,
    lock_session_of_task,
    not_owner,
    require_task,
)

_RUNNING_OF_SESSION = (
    f"SELECT id FROM tasks WHERE session_id = ? AND status = '{TaskStatus.RUNNING}'"
)
_NO_AWAITED_APPROVAL = "UPDATE tasks SET awaiting_approval = NULL WHERE id = ?"
_HELD_EPOCH = f"SELECT {EPOCH_OF_TASK} FROM tasks WHERE id = ?"


@functools.cache
def _task_update(names: tuple[str, ...], previous: str, checked: bool = False) -> str:
    """The move of one task from ``previous``; ``checked``: only while an epoch (the
    last parameter) holds its session."""
    assignments = ", ".join(f"{name} = ?" for name in ("status", "updated_at", *names))
    claim = f" AND {EPOCH_OF_TASK} = ?" if checked else ""
    return (
        f"UPDATE tasks SET {assignments} WHERE id = ? AND status = '{previous}'{claim}"
        f" RETURNING {TASK_COLUMNS}"
    )


def _values(
    output: str | None = None,
    error: str | None = None,
    cost_usd: float | None = None,
    num_turns: int | None = None,
    duration_ms: int | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The columns an end sets: those given; what is left ``None`` keeps what the task holds."""
    given = {
        "output": output,
        "error": error,
        "cost_usd": to_db_float(cost_usd),
        "num_turns": num_turns,
        "duration_ms": duration_ms,
        "usage": None if usage is None else to_json_text(usage),
    }
    return {column: value for column, value in given.items() if value is not None}


class TaskOutcomes:
    """Reached as ``Store.outcomes``. ``events``: where an end is told; ``approvals``: what
    expires with a turn; ``ended``: what keeps ended tasks as read."""

    def __init__(
        self, engine: Engine, events: Events, approvals: Approvals, ended: EndedTasks
    ) -> None:
        self._engine = engine
        self._execute = engine.execute
        self._events = events
        self._approvals = approvals
        self._ended = ended

    def finish(
        self,
        task_id: str,
        status: str,
        *,
        output: str | None = None,
        error: str | None = None,
        cost_usd: float | None = None,
        num_turns: int | None = None,
        duration_ms: int | None = None,
        usage: dict[str, int] | None = None,
        events: Sequence[tuple[str, dict[str, Any]]] = (),
        epoch: int | None = None,
    ) -> Task:
        """running -> completed | failed | cancelled, or pending -> cancelled, in one commit.

        Writes ``events`` (what carried the outcome) with the move. Arguments left
        ``None`` keep what the task holds. With ``epoch``, the move is made only while
        that claim holds the session (else ``NotOwner``), checked in the move's own
        statement.
        """
        if status not in TERMINAL_STATUSES:
            raise IllegalTransition(
                f"'{status}' is not a terminal task status.", {"task_id": task_id, "to": status}
            )
        values = _values(output, error, cost_usd, num_turns, duration_ms, usage)
        entries = checked(events)
        predecessors = transitions.predecessors(status)

        def write() -> Task:
            lock_session_of_task(self._engine, task_id)
            task = self._move(task_id, status, values, cost_usd, predecessors, entries, epoch)
            if task is None:
                raise self._illegal(task_id, status, epoch)
            return task

        return self._ended.keep(self._engine.write(write))

    def cancel_pending(self, task_id: str, error: str) -> Task | None:
        """pending -> cancelled with its event; ``None`` if the task was no longer pending."""
        values = _values(error=error)

        def write() -> Task | None:
            lock_session_of_task(self._engine, task_id)
            task = self._move(task_id, TaskStatus.CANCELLED, values, None, (TaskStatus.PENDING,))
            if task is None:
                require_task(self._engine, task_id)
            return task

        return self._engine.write(write)

    def fail_running_within(self, session_id: str, error: str) -> str | None:
        """Inside a write that holds the session's row: its running task fails; its id."""
        row = self._execute(_RUNNING_OF_SESSION, (session_id,)).fetchone()
        if row is None:
            return None
        self._move(row[0], TaskStatus.FAILED, _values(error=error), None, (TaskStatus.RUNNING,))
        return row[0]

    def _move(
        self,
        task_id: str,
        target: str,
        values: dict[str, Any],
        cost: float | None,
        predecessors: tuple[str, ...],
        events: Entries | None = None,
        epoch: int | None = None,
    ) -> Task | None:
        """Move the task to the terminal ``target`` from one of ``predecessors``, with all
        that goes with it; ``None`` when it was in none. The predecessor that matched is
        the status the session's counters move from."""
        now = to_db_time(utcnow())
        values = {**values, "completed_at": now}
        names = tuple(values)
        params = [target, now, *values.values(), task_id]
        if epoch is not None:
            params.append(epoch)
        for previous in predecessors:
            row = self._execute(_task_update(names, previous, epoch is not None), params).fetchone()
            if row is not None:
                break
        else:
            return None
        task = task_from_row(row)
        expired = []
        if task.awaiting_approval is not None:  # so approvals of its turn wait: they end too
            task = msgspec.structs.replace(task, awaiting_approval=None)
            expired = self._expire_approvals(task.id, target)
        # A running task's end takes its session from busy back to idle, in the same statement.
        idle = SessionStatus.IDLE if previous == TaskStatus.RUNNING else None
        count_params: list[Any] = [to_db_float(cost)] if cost else []
        count_params += [now, now, task.session_id] if idle else [task.session_id]
        self._execute(count_move(previous, target, bool(cost), idle), count_params)
        self._events.append_within(
            task.id,
            [*(events or ()), *expired, ("status", task.status_event())],
            extra_bytes=usage.text_size(values.get("output"), values.get("error")),
        )
        return task

    def _expire_approvals(self, task_id: str, target: str) -> Entries:
        """The pending approvals of an ending task expire, and it waits for none; their events.

        Asked only when the task's row names one: a task waits exactly while one of its
        approvals is pending (``approvals`` keeps that so), so most ends cost nothing here.
        """
        self._execute(_NO_AWAITED_APPROVAL, (task_id,))
        ended = f"The task ended ({target}) before this was decided."
        return [
            approval_event("approval_decided", approval)
            for approval in self._approvals.expired_of_task(task_id, ended)
        ]

    def _illegal(self, task_id: str, target: str, epoch: int | None = None) -> Exception:
        current = self._execute(TASK_STATUS, (task_id,)).fetchone()
        if current is None:
            return TaskNotFound(task_id)
        if epoch is not None and self._execute(_HELD_EPOCH, (task_id,)).fetchone()[0] != epoch:
            return not_owner(task_id, epoch)
        return transitions.illegal(task_id, current[0], target)
