"""Tasks as read: one, a page, a session's queue and running task, a node's running ones.

Times go in and come out as aware UTC datetimes. ``list`` time filters are exclusive
at both ends, as their names read: ``created_after`` keeps rows with ``created_at >
created_after`` and ``created_before`` rows with ``created_at < created_before``; a
row created exactly at a bound is outside. Accepting and starting tasks is
``task_queue``'s; ending them ``task_outcomes``'.
"""

from __future__ import annotations

from typing import Any

from aicli.contract import TERMINAL_STATUSES, Page, Task, TaskListQuery, TaskStatus
from aicli.contract.queries import given
from aicli.errors import TaskNotFound
from aicli.storage import paging, usage
from aicli.storage.ended import EndedTasks
from aicli.storage.engine import Engine
from aicli.storage.listing import merges, read_page, statuses_of, time_of
from aicli.storage.rows import TASK_COLUMNS, TASK_JSON_ROW, task_from_row
from aicli.storage.sql import TASK_EXISTS, TASK_STATUS

_GET = f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"
_BY_KEY = f"SELECT {TASK_COLUMNS} FROM tasks WHERE session_id = ? AND idempotency_key = ?"
_OWNER = (
    "SELECT tasks.session_id, sessions.owner FROM tasks"
    " JOIN sessions ON sessions.id = tasks.session_id WHERE tasks.id = ?"
)
_RUNNING_OF_SESSION = (
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE session_id = ? AND status = '{TaskStatus.RUNNING}'"
)
_RUNNING_OF_NODE = (
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE status = '{TaskStatus.RUNNING}'"
    " AND session_id IN (SELECT id FROM sessions WHERE owner_node = ?)"
    f" ORDER BY {paging.ordering('asc')}"
)
_HAS_PENDING = (
    f"SELECT 1 FROM tasks WHERE session_id = ? AND status = '{TaskStatus.PENDING}' LIMIT 1"
)
_PENDING_IDS = (
    f"SELECT id FROM tasks WHERE session_id = ? AND status = '{TaskStatus.PENDING}' ORDER BY seq"
)
_STATUS_COUNTS = "SELECT status, COUNT(*) FROM tasks GROUP BY status"


class Tasks:
    """Reached as ``Store.tasks``; ``ended``: what keeps ended tasks as read (they never
    change again)."""

    def __init__(self, engine: Engine, ended: EndedTasks) -> None:
        self._engine = engine
        self._execute = engine.execute
        self._ended = ended
        self._json_row = None if engine.is_postgres else TASK_JSON_ROW

    def get(self, task_id: str) -> Task:
        """The task; ``queue_position`` is left ``None`` (the runtime computes it from
        ``pending_ids``).

        An ended task kept (``EndedTasks``) is answered as kept once its row is seen to
        exist still: retention, on any node, may have deleted it, and only the pruning
        node's own cache is told.
        """
        ended = self._ended.get(task_id)

        def read() -> Task:
            if ended is not None:
                if self._execute(TASK_EXISTS, (task_id,)).fetchone() is None:
                    self._ended.forget((task_id,))
                    raise TaskNotFound(task_id)
                return ended
            row = self._execute(_GET, (task_id,)).fetchone()
            if row is None:
                raise TaskNotFound(task_id)
            return self._ended.from_row(row)

        if ended is not None:
            return self._engine.read(read)
        return self._ended.read_once(task_id, lambda: self._engine.read(read))

    def list(self, query: TaskListQuery | None = None, /, **fields: Any) -> Page:
        """A page of tasks narrowed by ``query`` (or its fields as keywords); see the module
        docstring for the time window. ``owner``: only tasks of sessions that principal
        opened. Each field of the query becomes its condition here, and only here."""
        query = given(TaskListQuery, query, fields)
        request = paging.page_request(query.limit, query.cursor, query.order)
        chosen = statuses_of(query.status, TaskStatus)
        conditions, params = paging.window(
            request,
            time_of(query.created_after, "created_after"),
            time_of(query.created_before, "created_before"),
        )
        if query.session_id is not None:
            conditions.insert(0, "session_id = ?")
            params.insert(0, query.session_id)
        if query.owner is not None:
            conditions.insert(0, "session_id IN (SELECT id FROM sessions WHERE owner = ?)")
            params.insert(0, query.owner)
        return self._engine.read(
            lambda: read_page(
                self._engine,
                "tasks",
                TASK_COLUMNS,
                self._ended.from_row,
                conditions,
                params,
                chosen,
                request,
                size=usage.TASK_SIZE,
                json_row=self._json_row,
                kept=self._ended.kept,
            ),
            snapshot=merges(chosen),
        )

    def for_idempotency_key(self, session_id: str, idempotency_key: str) -> Task | None:
        """The task the session accepted under ``idempotency_key``, if any."""

        def read() -> Task | None:
            row = self._execute(_BY_KEY, (session_id, idempotency_key)).fetchone()
            return None if row is None else task_from_row(row)

        return self._engine.read(read)

    def owner(self, task_id: str) -> tuple[str, str | None]:
        """The task's session and that session's owner, in one read, whether the task ended
        or not: a caller's check costs the same for an unknown id as for someone else's."""
        row = self._engine.read(lambda: self._execute(_OWNER, (task_id,)).fetchone())
        if row is None:
            raise TaskNotFound(task_id)
        return row[0], row[1]

    def ended(self, task_id: str) -> bool:
        """Whether the task has ended, from its status alone (a large answer is not read)."""
        row = self._engine.read(lambda: self._execute(TASK_STATUS, (task_id,)).fetchone())
        if row is None:
            raise TaskNotFound(task_id)
        return row[0] in TERMINAL_STATUSES

    def running_of(self, session_id: str) -> Task | None:
        """The session's running task, if one is (at most one ever is)."""

        def read() -> Task | None:
            row = self._execute(_RUNNING_OF_SESSION, (session_id,)).fetchone()
            return None if row is None else task_from_row(row)

        return self._engine.read(read)

    def running_on(self, node_id: str) -> list[Task]:
        """The running tasks of the sessions ``node_id`` holds (at most one a session), in
        acceptance order."""
        return self._engine.read(
            lambda: [task_from_row(row) for row in self._execute(_RUNNING_OF_NODE, (node_id,))]
        )

    def has_pending(self, session_id: str) -> bool:
        return self._engine.read(
            lambda: self._execute(_HAS_PENDING, (session_id,)).fetchone() is not None
        )

    def pending_ids(self, session_id: str) -> list[str]:
        """The ids of the session's pending tasks in acceptance order: queue positions, cheaply."""
        return self._engine.read(
            lambda: [row[0] for row in self._execute(_PENDING_IDS, (session_id,)).fetchall()]
        )

    def status_counts(self) -> dict[str, int]:
        """Tasks per status, every status present (for metrics)."""

        def read() -> dict[str, int]:
            counts = dict.fromkeys(tuple(TaskStatus), 0)
            counts.update(dict(self._execute(_STATUS_COUNTS).fetchall()))
            return counts

        return self._engine.read(read)
