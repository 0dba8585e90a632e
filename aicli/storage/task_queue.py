"""A session's queue: tasks accepted in order, and the next one started.

The store decides what runs next: the pending task with the lowest ``seq`` (its
place in its session's queue, handed out when it is accepted), and nothing while
another task of the session runs or once the session is closed.
"""

from __future__ import annotations

from peewee import IntegrityError

from aicli.contract import SessionStatus, Task, TaskStatus, TaskSubmit, new_id, utcnow
from aicli.errors import LimitExceeded, SessionClosed, SessionNotFound, StorageError
from aicli.storage import idempotency, usage
from aicli.storage.counters import count_move
from aicli.storage.engine import Engine
from aicli.storage.events import Events
from aicli.storage.fields import to_db_time, to_json_text
from aicli.storage.rows import TASK_COLUMNS, stored_value, task_from_row
from aicli.storage.schema import count_column
from aicli.storage.sql import for_update, marks, not_owner

_UNLIMITED = 2**62
_PENDING_EVENT = to_json_text({"status": TaskStatus.PENDING})  # a new task's first event
_N_PENDING = count_column(TaskStatus.PENDING)
_SESSION_OWNER = "SELECT owner FROM sessions WHERE id = ?"
_SESSION_STATUS_EPOCH = "SELECT status, owner_epoch FROM sessions WHERE id = ?"
# Takes the session's row lock on PostgreSQL, so a close waits for the new task, and
# hands out the task's place in the session's queue (``seq``): the order tasks run in.
_COUNT_NEW_TASK = (
    f"UPDATE sessions SET {_N_PENDING} = {_N_PENDING} + 1, last_seq = last_seq + 1,"
    " stored_bytes = stored_bytes + ?"
    f" WHERE id = ? AND status <> '{SessionStatus.CLOSED}' AND {_N_PENDING} < ?"
    f" RETURNING last_seq, {_N_PENDING}"
)
_SESSION_FULLNESS = f"SELECT status, {_N_PENDING} FROM sessions WHERE id = ?"
# What a submit sets is the submit's fields, by name: a new one needs only its column.
_SUBMITTED = TaskSubmit.__struct_fields__
_INSERT_TASK = (
    "INSERT INTO tasks (id, session_id, status, created_at, updated_at, idempotency_key,"
    f" idempotency_fingerprint, seq, {', '.join(_SUBMITTED)})"
    f" VALUES ({marks(8 + len(_SUBMITTED))})"
)
_INSERT_FIRST_EVENT = (
    "INSERT INTO task_events (task_id, seq, type, created_at, data) VALUES (?, 1, 'status', ?, ?)"
)
# The queue: the session's pending task with the lowest seq, and only while none of
# its tasks runs. One statement, so the choice and the claim cannot drift apart.
_START_NEXT = (
    f"UPDATE tasks SET status = '{TaskStatus.RUNNING}', started_at = ?, updated_at = ?"
    " WHERE id = (SELECT id FROM tasks WHERE session_id = ? AND status = 'pending'"
    " ORDER BY seq LIMIT 1)"
    f" AND status = '{TaskStatus.PENDING}' AND NOT EXISTS"
    " (SELECT 1 FROM tasks AS other WHERE other.session_id = ?"
    f" AND other.status = '{TaskStatus.RUNNING}')"
    f" RETURNING {TASK_COLUMNS}"
)
# The counters and the session's move to busy in one statement.
_STARTED_COUNTS = count_move(TaskStatus.PENDING, TaskStatus.RUNNING, False, SessionStatus.BUSY)


class TaskQueue:
    """Reached as ``Store.queue``; ``events``: where a start is told."""

    def __init__(self, engine: Engine, events: Events) -> None:
        self._engine = engine
        self._execute = engine.execute
        self._events = events
        self._lock_session = _SESSION_OWNER + for_update(engine)
        self._lock_session_epoch = _SESSION_STATUS_EPOCH + for_update(engine)

    def accept(
        self,
        session_id: str,
        request: TaskSubmit,
        *,
        idempotency_key: str | None = None,
        max_pending: int | None = None,
        task_id: str | None = None,
    ) -> tuple[Task, bool]:
        """Accept a task into the session's queue, with its ``pending`` event; ``(task, created)``.

        With an ``idempotency_key`` already used in the session with the same request,
        returns the first task and ``False``, even if that session has closed since;
        used with another request, or in another session of the same owner,
        ``IdempotencyKeyReused`` (see ``idempotency``). Otherwise a
        closed session raises ``SessionClosed`` and a session holding
        ``max_pending`` pending tasks ``LimitExceeded``, and one whose owner would pass its
        ``max_stored_bytes`` ``StorageLimitExceeded`` (``usage``): the checks, the place in
        the queue and the insert share a transaction (and a lock on the session
        row), so no task slips into a session after its close has cancelled the
        pending ones. The returned task carries its ``queue_position``. The new
        task's id is ``task_id`` if given (a caller that waits on it watches it first).
        """
        given = {name: getattr(request, name) for name in _SUBMITTED}
        given["metadata"] = dict(given["metadata"] or {})
        submitted = [stored_value(value) for value in given.values()]
        size = usage.text_size(*submitted, _PENDING_EVENT)
        limit = _UNLIMITED if max_pending is None else max_pending
        fingerprint = None
        if idempotency_key is not None:
            fingerprint = idempotency.fingerprint(session_id, given)

        def write() -> tuple[Task, bool]:
            stored_limit = usage.limit_of(self._engine, session_id=session_id)
            if idempotency_key is not None:
                first = self._first_with_key(session_id, idempotency_key, fingerprint)
                if first is not None:
                    return first, False
            if stored_limit is not None:
                usage.ensure_room(self._engine, stored_limit, size)
            counted = self._execute(_COUNT_NEW_TASK, (size, session_id, limit)).fetchone()
            if counted is None:
                raise self._refusal(session_id, limit)
            seq, pending = counted
            now = utcnow()
            task = Task(
                id=task_id or new_id(),
                session_id=session_id,
                status=TaskStatus.PENDING,
                created_at=now,
                queue_position=pending - 1,
                **given,
            )
            stored_now = to_db_time(now)
            head = (task.id, session_id, TaskStatus.PENDING, stored_now, stored_now)
            self._execute(_INSERT_TASK, (*head, idempotency_key, fingerprint, seq, *submitted))
            self._execute(_INSERT_FIRST_EVENT, (task.id, stored_now, _PENDING_EVENT))
            return task, True

        try:
            return self._engine.write(write)
        except IntegrityError as exc:
            if idempotency_key is None:
                raise StorageError(f"The task could not be stored: {exc}") from exc
            # Another writer used the key between our check and our insert: look again.
            return self._engine.write(write)

    def _first_with_key(self, session_id: str, key: str, fingerprint: str) -> Task | None:
        """Inside the write: the task the session accepted under ``key``, if any (see
        ``idempotency``). The session is locked before the look, so racers with one key
        take turns."""
        session = self._execute(self._lock_session, (session_id,)).fetchone()
        if session is None:
            raise SessionNotFound(session_id)
        return idempotency.first_task(self._engine, session_id, session[0], key, fingerprint)

    def _refusal(self, session_id: str, limit: int) -> Exception:
        """Why ``_COUNT_NEW_TASK`` matched no row: no session, a closed one, or a full queue."""
        row = self._execute(_SESSION_FULLNESS, (session_id,)).fetchone()
        if row is None:
            return SessionNotFound(session_id)
        if row[0] == SessionStatus.CLOSED:
            return SessionClosed(session_id)
        return LimitExceeded(
            f"Session '{session_id}' already has {limit} pending tasks; retry when some have run.",
            retry_after=max(1, limit // 10),
            details={"max_pending_per_session": limit},
        )

    def start_next(self, session_id: str, *, epoch: int | None = None) -> Task | None:
        """Take the session's next task: pending -> running, committed, with its event.

        ``None`` when there is nothing to start. The session row is locked first, so
        two callers can never both start a task of one session. With ``epoch`` (the
        caller's claim on the session), ``NotOwner`` if a later claim holds the session.
        """

        def write() -> Task | None:
            row = self._execute(self._lock_session_epoch, (session_id,)).fetchone()
            if row is None:
                raise SessionNotFound(session_id)
            if epoch is not None and row[1] != epoch:
                raise not_owner(session_id, epoch)
            if row[0] == SessionStatus.CLOSED:
                return None
            now = to_db_time(utcnow())
            started = self._execute(_START_NEXT, (now, now, session_id, session_id)).fetchone()
            if started is None:
                return None
            task = task_from_row(started)
            self._execute(_STARTED_COUNTS, (now, now, session_id))  # not closed: seen above
            self._events.append_within(task.id, [("status", task.status_event())])
            return task

        return self._engine.write(write)
