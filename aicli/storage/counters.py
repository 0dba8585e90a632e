"""How a task's move shows in its session's row: its counters, its cost, its status.

Written in the transaction that moves the task (``task_queue``, ``task_outcomes``),
so a session read never disagrees with its tasks. The statements depend on their
arguments alone, so each is built once.
"""

from __future__ import annotations

import functools

from aicli.contract import SessionStatus
from aicli.storage.schema import count_column


@functools.cache
def count_move(previous: str, target: str, with_cost: bool, session_to: str | None = None) -> str:
    """Move one task between the session's counters; with ``session_to``, the session
    takes that status too (busy: unconditionally; idle: only from busy), with
    ``last_active_at`` and ``updated_at`` (two more parameters before the id)."""
    leaving, entering = count_column(previous), count_column(target)
    cost = ", total_cost_usd = total_cost_usd + ?" if with_cost else ""
    status = ""
    if session_to == SessionStatus.BUSY:
        status = f", status = '{session_to}', last_active_at = ?, updated_at = ?"
    elif session_to is not None:
        busy = f"status = '{SessionStatus.BUSY}'"
        status = (
            f", status = CASE WHEN {busy} THEN '{session_to}' ELSE status END"
            f", last_active_at = CASE WHEN {busy} THEN ? ELSE last_active_at END"
            f", updated_at = CASE WHEN {busy} THEN ? ELSE updated_at END"
        )
    return (
        f"UPDATE sessions SET {leaving} = {leaving} - 1, {entering} = {entering} + 1"
        f"{cost}{status} WHERE id = ?"
    )
