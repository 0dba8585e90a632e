"""The task state machine, in the one place the store consults it.

::

    pending ──> running ──> completed
       │           ├──────> failed
       └───────────┴──────> cancelled

The store applies a transition as ``UPDATE ... WHERE id = ? AND status = ?
RETURNING ...`` for one predecessor at a time, in the order listed, and checks
that a row came back: the check and the write are one statement, two writers
cannot both win, and the predecessor that matched is the status the session's
per-status counters move from, in the same transaction. Tasks only move forward
along this order, so once every attempt has failed, the status then read is one
the target cannot follow.
"""

from __future__ import annotations

from aicli.contract import TaskStatus
from aicli.errors import IllegalTransition

PREDECESSORS: dict[str, tuple[str, ...]] = {
    TaskStatus.RUNNING: (TaskStatus.PENDING,),
    TaskStatus.COMPLETED: (TaskStatus.RUNNING,),
    TaskStatus.FAILED: (TaskStatus.RUNNING,),
    TaskStatus.CANCELLED: (TaskStatus.PENDING, TaskStatus.RUNNING),
}


def predecessors(target: str) -> tuple[str, ...]:
    """The statuses ``target`` may follow, earliest first."""
    try:
        return PREDECESSORS[target]
    except KeyError:
        raise IllegalTransition(f"No task can move to {target!r}.", {"to": target}) from None


def illegal(task_id: str, current: str, target: str) -> IllegalTransition:
    return IllegalTransition(
        f"Task '{task_id}' is {current} and cannot become {target}.",
        {"task_id": task_id, "from": current, "to": target},
    )
