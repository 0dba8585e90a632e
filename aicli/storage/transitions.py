"""The task state machine, in the one place the store consults it.

::

    pending ──> running ──> completed
       │           ├──────> failed
       └───────────┴──────> cancelled

The store applies a transition as ``UPDATE ... WHERE id = ? AND status IN
(predecessors)`` and checks the row count, so the check and the write are one
statement and two writers cannot both win. In the same transaction it first
locks the task row (PostgreSQL ``FOR UPDATE``; on SQLite the write lock holds
everything) to learn which predecessor the task leaves, for the session's
per-status counters.
"""

from __future__ import annotations

from aicli.errors import IllegalTransition
from aicli.models import CANCELLED, COMPLETED, FAILED, PENDING, RUNNING

PREDECESSORS: dict[str, frozenset[str]] = {
    RUNNING: frozenset({PENDING}),
    COMPLETED: frozenset({RUNNING}),
    FAILED: frozenset({RUNNING}),
    CANCELLED: frozenset({PENDING, RUNNING}),
}


def predecessors(target: str) -> frozenset[str]:
    try:
        return PREDECESSORS[target]
    except KeyError:
        raise IllegalTransition(f"No task can move to {target!r}.", {"to": target}) from None


def illegal(task_id: str, current: str, target: str) -> IllegalTransition:
    return IllegalTransition(
        f"Task '{task_id}' is {current} and cannot become {target}.",
        {"task_id": task_id, "from": current, "to": target},
    )
