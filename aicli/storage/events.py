"""A task's event log: numbered entries, appended in order and read in pages.

Appenders to one task are serialised (SQLite: the write lock; PostgreSQL: a row
lock on the task), so sequence numbers never collide and never leave gaps. Other
repositories append within their own writes (``append_within``), so that an event
commits with the change it tells of, or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aicli.contract import Event, utcnow
from aicli.errors import InvalidRequest, TaskNotFound
from aicli.storage import paging, usage
from aicli.storage.engine import Engine
from aicli.storage.fields import to_db_time, to_json_text
from aicli.storage.rows import EVENT_COLUMNS, event_from_row
from aicli.storage.sql import EPOCH_OF_TASK, TASK_EXISTS, for_update, marks, not_owner, require_task

MAX_TYPE = 64  # the width of task_events.type
_IN_CHUNK = 500
_LAST_SEQ = "SELECT MAX(seq) FROM task_events WHERE task_id = ?"
# One statement where the write lock already serialises appenders (SQLite). On
# PostgreSQL the row lock comes first and this in a statement after it: a statement
# that waited for a lock still reads other rows (the last seq, the session's epoch)
# with the snapshot it began with, from before the writer it waited for committed.
_TASK_LAST_SEQ = (
    f"SELECT ({_LAST_SEQ.replace('?', 'tasks.id')}), {EPOCH_OF_TASK} FROM tasks WHERE id = ?"
)
_EVENTS_AFTER = (
    f"SELECT {EVENT_COLUMNS} FROM task_events WHERE task_id = ? AND seq > ? ORDER BY seq"
)
_EVENT_SIZES = (
    "SELECT seq, LENGTH(data) FROM task_events WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?"
)
_EVENTS_UP_TO = (
    f"SELECT {EVENT_COLUMNS} FROM task_events WHERE task_id = ? AND seq > ? AND seq <= ?"
    " ORDER BY seq"
)
_INSERT_EVENTS = "INSERT INTO task_events (task_id, seq, type, created_at, data) VALUES "
_EVENT_MARKS = f"({marks(5)})"

Entries = list[tuple[str, dict[str, Any]]]


def checked(events: Iterable[tuple[str, dict[str, Any]]]) -> Entries:
    """``events`` as a list, once each is a (type, data dict) pair; else ``InvalidRequest``."""
    entries = list(events)
    for entry in entries:
        if (
            not isinstance(entry, tuple)
            or len(entry) != 2
            or not isinstance(entry[0], str)
            or not 1 <= len(entry[0]) <= MAX_TYPE
            or not isinstance(entry[1], dict)
        ):
            raise InvalidRequest(
                f"An event is a (type of 1-{MAX_TYPE} characters, data dict) pair, not {entry!r}.",
                {"field": "events"},
            )
    return entries


def _check_after_limit(after: int, limit: int | None) -> None:
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise InvalidRequest("'after' must be a sequence number >= 0.", {"field": "after"})
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidRequest("'limit' must be a positive integer.", {"field": "limit"})


class Events:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._execute = engine.execute
        # PostgreSQL: an append locks its task's row (SQLite's write lock orders appenders).
        self._lock_task = TASK_EXISTS + for_update(engine) if engine.is_postgres else None

    def append(
        self,
        task_id: str,
        events: Iterable[tuple[str, dict[str, Any]]],
        *,
        epoch: int | None = None,
    ) -> list[Event]:
        """Append ``(type, data)`` entries with the next sequence numbers, in one transaction.

        With ``epoch``, ``NotOwner`` unless that claim holds the task's session
        (whoever takes the session over must fail the task, which waits for this
        lock, so nothing of the old claim lands after that).
        """
        entries = checked(events)
        # Events of a running turn: its durable end (``finish_task``) makes them durable too.
        return self._engine.write(
            lambda: self.append_within(task_id, entries, epoch), durable=False
        )

    def append_within(
        self, task_id: str, entries: Entries, epoch: int | None = None, extra_bytes: int = 0
    ) -> list[Event]:
        """Inside a write: append ``entries``; the session's ``stored_bytes`` grows by their
        data and by ``extra_bytes`` (what the caller wrote besides, in the same transaction)."""
        # PostgreSQL: the lock first; what it guards is read by the next statement.
        lock = self._lock_task
        if lock is not None and self._execute(lock, (task_id,)).fetchone() is None:
            raise TaskNotFound(task_id)
        row = self._execute(_TASK_LAST_SEQ, (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(task_id)
        last, held = row
        if epoch is not None and held != epoch:
            raise not_owner(task_id, epoch)
        last = last or 0
        now = utcnow()
        stored_now = to_db_time(now)
        stored = [(kind, to_json_text(data)) for kind, data in entries]
        for start in range(0, len(stored), _IN_CHUNK):
            chunk = stored[start : start + _IN_CHUNK]
            params: list[Any] = []
            for offset, (kind, data) in enumerate(chunk, start=last + start + 1):
                params += (task_id, offset, kind, stored_now, data)
            self._execute(_INSERT_EVENTS + ", ".join([_EVENT_MARKS] * len(chunk)), params)
        added = extra_bytes + sum(len(data) for _, data in stored)
        self._execute(usage.ADD_TO_SESSION_OF_TASK, (added, task_id))
        return [
            Event(seq=last + offset, type=kind, created_at=now, data=data)
            for offset, (kind, data) in enumerate(entries, start=1)
        ]

    def list(self, task_id: str, *, after: int = 0, limit: int | None = None) -> list[Event]:
        """Events with ``seq > after``, ascending; at most ``limit`` of them."""
        _check_after_limit(after, limit)
        sql, params = _EVENTS_AFTER, [task_id, after]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)

        def read() -> list[Event]:
            found = [event_from_row(row) for row in self._execute(sql, params).fetchall()]
            if not found:
                require_task(self._engine, task_id)
            return found

        return self._engine.read(read)

    def page(
        self, task_id: str, *, after: int = 0, limit: int, max_bytes: int | None = None
    ) -> tuple[list[Event], bool]:
        """Events with ``seq > after``: at most ``limit``, and no more than fit ``max_bytes``
        (default ``paging.PAGE_BYTES``) of stored data (at least one); and whether more follow.

        The sizes are read first, so a page of large events is never read whole only to
        be cut: its rows are what the page holds.
        """
        _check_after_limit(after, limit)

        def read() -> tuple[list[Event], bool]:
            sizes = self._execute(_EVENT_SIZES, (task_id, after, limit + 1)).fetchall()
            if not sizes:
                require_task(self._engine, task_id)
                return [], False
            taken = min(limit, paging.fitting((size for _, size in sizes), max_bytes))
            rows = self._execute(_EVENTS_UP_TO, (task_id, after, sizes[taken - 1][0])).fetchall()
            return [event_from_row(row) for row in rows], len(sizes) > taken

        return self._engine.read(read)
