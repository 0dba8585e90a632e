"""Test support: what tests read and write straight in a store's tables.

No product code needs these, so no repository offers them: a raw read or write
to set up a state or check one, a look at the statements a call runs, a task
from its fields, a session put in a status without the tasks that would move it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from peewee import QueryEvent

from aicli.contract import Task, TaskSubmit
from aicli.storage import Store
from aicli.storage.rows import TASK_COLUMNS, task_from_row


def rows(store: Store, sql: str, params: Sequence[Any] = (), *, snapshot: bool = False) -> list:
    """Every row ``sql`` (``?`` placeholders) reads, as tuples."""
    engine = store.engine
    return engine.read(
        lambda: [tuple(row) for row in engine.execute(sql, params).fetchall()], snapshot=snapshot
    )


def value(store: Store, sql: str, params: Sequence[Any] = ()) -> Any:
    """The first column of the first row ``sql`` reads (``None``: no row)."""
    engine = store.engine
    row = engine.read(lambda: engine.execute(sql, params).fetchone())
    return None if row is None else row[0]


def write(store: Store, sql: str, params: Sequence[Any] = ()) -> int:
    """Run ``sql`` in a write transaction of its own; how many rows it changed."""
    engine = store.engine
    return engine.write(lambda: engine.execute(sql, params).rowcount)


def submit_task(
    store: Store,
    session_id: str,
    *,
    idempotency_key: str | None = None,
    max_pending: int | None = None,
    task_id: str | None = None,
    **fields: Any,
) -> tuple[Task, bool]:
    """``Store.create_task`` with the submit's fields given by name."""
    return store.create_task(
        session_id,
        TaskSubmit(**fields),
        idempotency_key=idempotency_key,
        max_pending=max_pending,
        task_id=task_id,
    )


def set_session_status(store: Store, session_id: str, status: str) -> None:
    """Put the session in ``status`` as is, tasks and counters untouched."""
    write(store, "UPDATE sessions SET status = ? WHERE id = ?", (status, session_id))


def running_tasks(store: Store) -> list[Task]:
    """Every running task, of every node, in acceptance order."""
    sql = f"SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'running' ORDER BY created_at, id"
    return [task_from_row(row) for row in rows(store, sql)]


@contextlib.contextmanager
def captured_queries(store: Store) -> Iterator[list[QueryEvent]]:
    """Record every statement ``store`` runs inside the block, from any thread."""
    events: list[QueryEvent] = []
    hooks = store.engine.db.query_hooks
    hooks.append(events.append)
    try:
        yield events
    finally:
        hooks.remove(events.append)
