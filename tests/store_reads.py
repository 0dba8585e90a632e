"""Reads of a store that only tests make, straight from its tables.

No product code needs them, so ``Store`` does not offer them: counting tasks
by status, a task's last event number, the schema version, many tasks at once.
A plain module (not a pytest plugin), so tests import it freely.
"""

from __future__ import annotations

from collections.abc import Iterable

from aicli.contract import Task
from aicli.storage import Store, migrations
from aicli.storage.rows import TASK_COLUMNS, task_from_row
from aicli.testing import store_sql


def count_tasks(store: Store, *, session_id: str | None, statuses: Iterable[str]) -> int:
    """How many tasks (of one session, or of all) have one of ``statuses``."""
    params: list[str] = sorted(set(statuses))
    sql = f"SELECT COUNT(*) FROM tasks WHERE status IN ({', '.join('?' * len(params))})"
    if session_id is not None:
        sql += " AND session_id = ?"
        params.append(session_id)
    return store_sql.value(store, sql, params)


def tasks_by_id(store: Store, task_ids: Iterable[str]) -> dict[str, Task]:
    """The tasks that exist among ``task_ids``, read in one snapshot."""
    wanted = set(task_ids)
    rows = store_sql.rows(store, f"SELECT {TASK_COLUMNS} FROM tasks", snapshot=True)
    return {task.id: task for task in map(task_from_row, rows) if task.id in wanted}


def last_event_seq(store: Store, task_id: str) -> int:
    """The highest ``seq`` of the task's events, 0 when it has none."""
    return max((event.seq for event in store.list_events(task_id)), default=0)


def schema_version(store: Store) -> int:
    """The newest migration applied to the store's database (0: none)."""
    return max(migrations.applied_versions(store.engine), default=0)


def pending_tasks(store: Store, session_id: str | None = None) -> list[Task]:
    """Pending tasks, each session's in queue order (sessions in the order they opened)."""
    sql = f"SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'pending'"
    params = []
    if session_id is not None:
        sql += " AND session_id = ?"
        params.append(session_id)
    sql += " ORDER BY session_id, seq"
    return [task_from_row(row) for row in store_sql.rows(store, sql, params)]


def misplaced_waits(store: Store) -> list[tuple[str, str, str, str]]:
    """``(approval, its status, task, its status)`` that break "a task waits exactly while it
    runs and one of its approvals is pending, and only for such a one", read in one statement
    (so one snapshot)."""
    sql = (
        "SELECT approvals.id, approvals.status, tasks.id, tasks.status FROM approvals"
        " JOIN tasks ON tasks.id = approvals.task_id"
        " WHERE (approvals.status = 'pending' AND tasks.status <> 'running')"
        " OR (approvals.status = 'pending' AND tasks.awaiting_approval IS NULL)"
        " OR (tasks.awaiting_approval = approvals.id AND approvals.status <> 'pending')"
        " UNION ALL SELECT tasks.awaiting_approval, NULL, tasks.id, tasks.status FROM tasks"
        " WHERE tasks.awaiting_approval IS NOT NULL AND NOT EXISTS (SELECT 1 FROM approvals"
        " WHERE approvals.id = tasks.awaiting_approval AND approvals.task_id = tasks.id)"
    )
    return store_sql.rows(store, sql)
