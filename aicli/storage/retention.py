"""Retention (``--retain-days``): ended tasks older than the period go, with their events
and approvals, and the transcripts of sessions closed before it.

A task goes once it ended (``completed_at``) before the cutoff; one that is pending or
running never does, however old. Its session's counters lose it in the same
transaction (``task_counts`` and ``stored_bytes``, which a principal's
``max_stored_bytes`` counts) but keep its cost: a principal's budget counts what it
spent, pruned or not. Sessions themselves stay (a row each, holding that cost, and
listed as before with their remaining tasks); a closed one loses the transcript chunks
that let a node resume its conversation, which it will never continue.

Work goes in batches of ``BATCH`` tasks, each its own transaction, so that no
transaction holds the write lock (SQLite) or many row locks (PostgreSQL) for long.
On PostgreSQL every batch first takes a transaction-scoped advisory lock without
waiting: while one node prunes, another that tries finds the lock held and leaves the
round to it. (SQLite has one server.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aicli.contract import TERMINAL_STATUSES, SessionStatus
from aicli.storage import usage
from aicli.storage.ended import EndedTasks
from aicli.storage.engine import Engine
from aicli.storage.fields import to_db_time
from aicli.storage.schema import count_column

BATCH = 500
# Any constant will do; it is aicli's pruning lock on this database.
_PG_PRUNE_LOCK = 0x41_49_43_52_54
_TERMINAL = ", ".join(f"'{status}'" for status in sorted(TERMINAL_STATUSES))
# ``created_at`` bounds the index range (a task ends after it was created); the end decides.
_ENDED_BEFORE = (
    f"SELECT id FROM tasks WHERE status IN ({_TERMINAL}) AND created_at < ? AND completed_at < ?"
    " ORDER BY created_at LIMIT ?"
)
_CLOSED_TRANSCRIPTS = (
    "SELECT id FROM transcript_chunks WHERE session_id IN (SELECT id FROM sessions"
    f" WHERE status = '{SessionStatus.CLOSED}' AND updated_at < ?) LIMIT ?"
)


@dataclass(frozen=True)
class Pruned:
    tasks: int = 0
    transcript_chunks: int = 0
    skipped: bool = False  # another node held the lock


def _marks(count: int) -> str:
    return ", ".join("?" * count)


class Retention:
    """Reached as ``Store.retention``; ``ended``: the cache that must forget pruned tasks."""

    def __init__(self, engine: Engine, ended: EndedTasks) -> None:
        self._engine = engine
        self._execute = engine.execute
        self._ended = ended

    def prune(self, before: datetime, *, batch: int = BATCH) -> Pruned:
        """Delete what ended before ``before``, a batch per transaction, until none is left."""
        tasks = chunks = 0
        while True:
            done = self._engine.write(lambda: self._tasks_batch(before, batch))
            if done is None:
                return Pruned(tasks, chunks, skipped=True)
            tasks += len(done)
            self._ended.forget(done)
            if len(done) < batch:
                break
        while True:
            count = self._engine.write(lambda: self._transcripts_batch(before, batch))
            if count is None:
                return Pruned(tasks, chunks, skipped=True)
            chunks += count
            if count < batch:
                return Pruned(tasks, chunks)

    def _locked(self) -> bool:
        if not self._engine.is_postgres:
            return True
        row = self._execute("SELECT pg_try_advisory_xact_lock(?)", (_PG_PRUNE_LOCK,)).fetchone()
        return bool(row[0])

    def _tasks_batch(self, before: datetime, batch: int) -> list[str] | None:
        if not self._locked():
            return None
        cutoff = to_db_time(before)
        ids = [row[0] for row in self._execute(_ENDED_BEFORE, (cutoff, cutoff, batch))]
        if not ids:
            return ids
        among = f"IN ({_marks(len(ids))})"
        counts = self._execute(
            f"SELECT session_id, status, COUNT(*), SUM({usage.TASK_SIZE}) FROM tasks"
            f" WHERE id {among} GROUP BY session_id, status",
            ids,
        ).fetchall()
        event_sizes = dict(
            self._execute(
                "SELECT tasks.session_id, SUM(LENGTH(task_events.data)) FROM task_events"
                " JOIN tasks ON tasks.id = task_events.task_id"
                f" WHERE task_events.task_id {among} GROUP BY tasks.session_id",
                ids,
            ).fetchall()
        )
        self._execute(f"DELETE FROM task_events WHERE task_id {among}", ids)
        self._execute(f"DELETE FROM approvals WHERE task_id {among}", ids)
        self._execute(f"DELETE FROM tasks WHERE id {among}", ids)
        for session_id, status, count, size in counts:
            freed = int(size or 0) + int(event_sizes.pop(session_id, 0) or 0)
            self._uncount(session_id, status, int(count), freed)
        return ids

    def _uncount(self, session_id: str, status: str, count: int, freed: int) -> None:
        column = count_column(status)
        params: list[Any] = [count, freed, freed, session_id]
        self._execute(
            f"UPDATE sessions SET {column} = {column} - ?, stored_bytes = CASE"
            " WHEN stored_bytes > ? THEN stored_bytes - ? ELSE 0 END WHERE id = ?",
            params,
        )

    def _transcripts_batch(self, before: datetime, batch: int) -> int | None:
        if not self._locked():
            return None
        ids = [row[0] for row in self._execute(_CLOSED_TRANSCRIPTS, (to_db_time(before), batch))]
        if ids:
            self._execute(f"DELETE FROM transcript_chunks WHERE id IN ({_marks(len(ids))})", ids)
        return len(ids)
