"""The store: the single source of truth for sessions, tasks, their events and child processes.

Every public method is one short transaction (see ``engine`` for the
concurrency story) and returns the frozen values of ``aicli.models``, never a
row object, so results can cross threads and actors freely.

A session row carries its task counts per status and its total cost, updated
in the transaction that creates or moves a task, so that reading or listing
sessions costs the same whether they ran ten tasks or a million.

Times go in and come out as aware UTC datetimes. ``list_tasks`` time filters
are exclusive at both ends, as their names read: ``created_after`` keeps rows
with ``created_at > created_after`` and ``created_before`` rows with
``created_at < created_before``; a row created exactly at a bound is outside.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

from peewee import Expression, IntegrityError, Model, fn

from aicli.errors import (
    IllegalTransition,
    InvalidRequest,
    SessionClosed,
    SessionNotFound,
    StorageError,
    TaskNotFound,
)
from aicli.models import (
    PENDING,
    PERMISSION_MODES,
    RUNNING,
    SESSION_CLOSED,
    SESSION_IDLE,
    SESSION_STATUSES,
    TASK_STATUSES,
    TERMINAL_STATUSES,
    Event,
    Page,
    Session,
    Task,
    new_id,
    utcnow,
)
from aicli.storage import database, migrations, paging, transitions
from aicli.storage.engine import Engine
from aicli.storage.rows import event_from_row, session_from_row, task_from_row
from aicli.storage.schema import bind_tables, count_column

_SESSION_UPDATABLE = frozenset({"status", "claude_session_id", "last_active_at"})
_IN_CHUNK = 500
_MAX_EVENT_TYPE = 64  # the width of task_events.type


def open_store(url: str | None = None) -> Store:
    """Connect to ``url`` (default: ``resolve_database_url()``) and migrate it to the latest."""
    url = database.resolve_database_url(url)
    engine = Engine(database.connect(url), url)
    try:
        migrations.migrate(engine)
        engine.ping()
    except BaseException:
        engine.close()
        raise
    return Store(engine)


def _where(query: Any, condition: Expression | None) -> Any:
    return query if condition is None else query.where(condition)


def _status_set(
    statuses: Iterable[str] | str | None, allowed: tuple[str, ...]
) -> frozenset[str] | None:
    """The statuses to filter on; ``None`` when no filter is needed (none given, or all)."""
    if statuses is None:
        return None
    chosen = frozenset((statuses,) if isinstance(statuses, str) else statuses)
    unknown = sorted(chosen - set(allowed))
    if not chosen or unknown:
        raise InvalidRequest(
            f"'status' must be among {', '.join(allowed)}; got {', '.join(unknown) or 'nothing'}.",
            {"field": "status"},
        )
    return None if chosen == frozenset(allowed) else chosen


def _merges(statuses: frozenset[str] | None) -> bool:
    """Whether a page is merged from one query per status (and so needs a snapshot)."""
    return statuses is not None and len(statuses) > 1


def _aware(value: datetime | None, field: str) -> datetime | None:
    if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
        raise InvalidRequest(f"'{field}' must be a time with a UTC offset.", {"field": field})
    return value


T = TypeVar("T")

class Store:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._t = bind_tables(engine.db)
        self.database_url = engine.url

    @property
    def is_postgres(self) -> bool:
        return self._engine.is_postgres

    def close(self) -> None:
        self._engine.close()

    def atomically(self, work: Callable[[], T]) -> T:
        """Run several store calls made by ``work`` as one transaction: one commit, one fsync.

        The session actor records a status change, its event and the session's
        new state together, so a reader never sees one without the others, and
        a task costs a few commits instead of a dozen. On a transient failure
        ``work`` runs again from the start, so it must only call the store.
        """
        return self._engine.write(work)

    def ping(self) -> None:
        self._engine.ping()

    def schema_version(self) -> int:
        return max(migrations.applied_versions(self._engine), default=0)

    # sessions

    def create_session(
        self,
        *,
        workdir: str,
        model: str | None = None,
        permission_mode: str | None = None,
        allowed_tools: Iterable[str] = (),
        disallowed_tools: Iterable[str] = (),
        append_system_prompt: str | None = None,
        max_turns: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Session:
        if permission_mode is not None and permission_mode not in PERMISSION_MODES:
            raise InvalidRequest(
                f"'permission_mode' must be among {', '.join(PERMISSION_MODES)}.",
                {"field": "permission_mode"},
            )
        sessions = self._t.sessions
        now = utcnow()
        values = {
            "id": new_id(),
            "status": SESSION_IDLE,
            "workdir": workdir,
            "model": model,
            "permission_mode": permission_mode,
            "allowed_tools": list(allowed_tools),
            "disallowed_tools": list(disallowed_tools),
            "append_system_prompt": append_system_prompt,
            "max_turns": max_turns,
            "metadata": dict(metadata or {}),
            "created_at": now,
            "updated_at": now,
            **{count_column(status): 0 for status in TASK_STATUSES},
            "total_cost_usd": 0.0,
        }
        self._engine.write(lambda: sessions.insert(**values).execute())
        return session_from_row(sessions(**values))

    def get_session(self, session_id: str) -> Session:
        return self._engine.read(lambda: self._session(session_id))

    def list_sessions(
        self,
        *,
        statuses: Iterable[str] | None = None,
        limit: int = paging.DEFAULT_LIMIT,
        cursor: str | None = None,
        order: str = "desc",
    ) -> Page:
        request = paging.page_request(limit, cursor, order)
        chosen = _status_set(statuses, SESSION_STATUSES)

        def read() -> Page:
            condition = paging.window(self._t.sessions, request)
            rows, has_more = self._page(self._t.sessions, condition, chosen, request)
            return self._finish_page([session_from_row(row) for row in rows], has_more)

        return self._engine.read(read, snapshot=_merges(chosen))

    def update_session(self, session_id: str, **fields: Any) -> Session:
        """Set ``status``, ``claude_session_id`` or ``last_active_at``; bumps ``updated_at``.

        A closed session stays closed: moving it to another status raises
        ``IllegalTransition`` rather than silently reopening it.
        """
        unknown = sorted(set(fields) - _SESSION_UPDATABLE)
        if unknown:
            raise InvalidRequest(
                f"Sessions have no updatable field {', '.join(map(repr, unknown))}.",
                {"field": unknown[0]},
            )
        status = fields.get("status")
        if "status" in fields and status not in SESSION_STATUSES:
            raise InvalidRequest(f"No session status {status!r}.", {"field": "status"})
        _aware(fields.get("last_active_at"), "last_active_at")
        sessions = self._t.sessions

        def write() -> Session:
            values = {getattr(sessions, name): value for name, value in fields.items()}
            values[sessions.updated_at] = utcnow()
            condition = sessions.id == session_id
            if "status" in fields and status != SESSION_CLOSED:
                condition &= sessions.status != SESSION_CLOSED
            if sessions.update(values).where(condition).execute() == 0:
                current = self._session(session_id)
                raise IllegalTransition(
                    f"Session '{session_id}' is {current.status} and cannot become {status}.",
                    {"session_id": session_id, "from": current.status, "to": status},
                )
            return self._session(session_id)

        return self._engine.write(write)

    def open_session_count(self) -> int:
        sessions = self._t.sessions
        return self._engine.read(
            lambda: sessions.select().where(sessions.status != SESSION_CLOSED).count()
        )

    def sessions_with_status(self, statuses: Iterable[str]) -> list[Session]:
        """Matching sessions in creation order."""
        chosen = _status_set(statuses, SESSION_STATUSES)
        sessions = self._t.sessions

        query = _where(
            sessions.select().order_by(*paging.ordering(sessions, "asc")),
            None if chosen is None else sessions.status.in_(sorted(chosen)),
        )
        return self._engine.read(lambda: [session_from_row(row) for row in query])

    # tasks

    def create_task(
        self,
        *,
        session_id: str,
        command: str,
        timeout_s: float | None = None,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Task, bool]:
        """Accept a task; ``(task, created)``.

        With an ``idempotency_key`` already used in the session, returns the first
        task and ``False``, even if that session has closed since. Otherwise a
        closed session raises ``SessionClosed``: the check and the insert share a
        transaction (and a lock on the session row), so no task slips into a
        session after its close has cancelled the pending ones.
        """
        sessions, tasks = self._t.sessions, self._t.tasks

        def write() -> tuple[Task, bool]:
            query = sessions.select(sessions.status).where(sessions.id == session_id)
            session = self._locked(query).first()
            if session is None:
                raise SessionNotFound(session_id)
            if idempotency_key is not None:
                existing = self._by_idempotency_key(session_id, idempotency_key)
                if existing is not None:
                    return existing, False
            if session.status == SESSION_CLOSED:
                raise SessionClosed(session_id)
            now = utcnow()
            values = {
                "id": new_id(),
                "session": session_id,
                "command": command,
                "status": PENDING,
                "created_at": now,
                "updated_at": now,
                "timeout_s": timeout_s,
                "metadata": dict(metadata or {}),
                "idempotency_key": idempotency_key,
            }
            tasks.insert(**values).execute()
            self._count(session_id, {PENDING: 1})
            return task_from_row(tasks(**values)), True

        try:
            return self._engine.write(write)
        except IntegrityError as exc:
            if idempotency_key is None:
                raise StorageError(f"The task could not be stored: {exc}") from exc
            # Another writer used the key between our check and our insert.
            existing = self.task_for_idempotency_key(session_id, idempotency_key)
            if existing is None:
                raise StorageError(f"The task could not be stored: {exc}") from exc
            return existing, False

    def task_for_idempotency_key(self, session_id: str, idempotency_key: str) -> Task | None:
        """The task the session accepted under ``idempotency_key``, if any."""
        return self._engine.read(lambda: self._by_idempotency_key(session_id, idempotency_key))

    def get_task(self, task_id: str) -> Task:
        """The task; ``queue_position`` is left ``None`` (the session actor knows it)."""
        tasks = self._t.tasks

        def read() -> Task:
            row = tasks.get_or_none(tasks.id == task_id)
            if row is None:
                raise TaskNotFound(task_id)
            return task_from_row(row)

        return self._engine.read(read)

    def get_tasks(self, task_ids: Iterable[str]) -> dict[str, Task]:
        """The tasks that exist among ``task_ids``, by id."""
        tasks = self._t.tasks
        wanted = sorted(set(task_ids))

        def read() -> dict[str, Task]:
            found: dict[str, Task] = {}
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                for row in tasks.select().where(tasks.id.in_(chunk)):
                    found[row.id] = task_from_row(row)
            return found

        return self._engine.read(read, snapshot=len(wanted) > _IN_CHUNK)

    def list_tasks(
        self,
        *,
        session_id: str | None = None,
        statuses: Iterable[str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = paging.DEFAULT_LIMIT,
        cursor: str | None = None,
        order: str = "desc",
    ) -> Page:
        """A page of tasks; see the module docstring for the time window."""
        request = paging.page_request(limit, cursor, order)
        chosen = _status_set(statuses, TASK_STATUSES)
        _aware(created_after, "created_after")
        _aware(created_before, "created_before")
        tasks = self._t.tasks
        condition = paging.all_of(
            None if session_id is None else tasks.session == session_id,
            paging.window(tasks, request, created_after, created_before),
        )

        def read() -> Page:
            rows, has_more = self._page(tasks, condition, chosen, request)
            return self._finish_page([task_from_row(row) for row in rows], has_more)

        return self._engine.read(read, snapshot=_merges(chosen))

    def start_task(self, task_id: str, *, started_at: datetime | None = None) -> Task:
        """pending -> running."""
        tasks = self._t.tasks
        return self._transition(
            task_id, RUNNING, {tasks.started_at: _aware(started_at, "started_at") or utcnow()}
        )

    def finish_task(
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
        completed_at: datetime | None = None,
    ) -> Task:
        """running -> completed | failed | cancelled, or pending -> cancelled.

        Arguments left ``None`` keep what the task holds.
        """
        if status not in TERMINAL_STATUSES:
            raise IllegalTransition(
                f"'{status}' is not a terminal task status.", {"task_id": task_id, "to": status}
            )
        tasks = self._t.tasks
        given = {
            tasks.output: output,
            tasks.error: error,
            tasks.cost_usd: cost_usd,
            tasks.num_turns: num_turns,
            tasks.duration_ms: duration_ms,
            tasks.usage: usage,
        }
        values = {column: value for column, value in given.items() if value is not None}
        values[tasks.completed_at] = _aware(completed_at, "completed_at") or utcnow()
        return self._transition(task_id, status, values)

    def pending_tasks(self, session_id: str | None = None) -> list[Task]:
        """Pending tasks in acceptance order, ``(created_at, id)`` ascending."""
        return self._tasks_with_status(PENDING, session_id)

    def running_tasks(self) -> list[Task]:
        return self._tasks_with_status(RUNNING, None)

    def count_tasks(self, *, session_id: str | None, statuses: Iterable[str]) -> int:
        chosen = _status_set(statuses, TASK_STATUSES)
        tasks = self._t.tasks
        condition = paging.all_of(
            None if session_id is None else tasks.session == session_id,
            None if chosen is None else tasks.status.in_(sorted(chosen)),
        )
        return self._engine.read(lambda: _where(tasks.select(), condition).count())

    def task_status_counts(self) -> dict[str, int]:
        """Tasks per status, every status present (for metrics)."""
        tasks = self._t.tasks

        def read() -> dict[str, int]:
            counts = dict.fromkeys(TASK_STATUSES, 0)
            query = tasks.select(tasks.status, fn.COUNT(tasks.id)).group_by(tasks.status)
            counts.update(dict(query.tuples()))
            return counts

        return self._engine.read(read)

    # events

    def append_events(
        self, task_id: str, events: Iterable[tuple[str, dict[str, Any]]]
    ) -> list[Event]:
        """Append ``(type, data)`` entries with the next sequence numbers, in one transaction.

        Appenders to one task are serialised (SQLite: the write lock;
        PostgreSQL: a row lock on the task), so sequence numbers never collide
        and never leave gaps.
        """
        entries = list(events)
        for entry in entries:
            if (
                not isinstance(entry, tuple)
                or len(entry) != 2
                or not isinstance(entry[0], str)
                or not 1 <= len(entry[0]) <= _MAX_EVENT_TYPE
                or not isinstance(entry[1], dict)
            ):
                raise InvalidRequest(
                    f"An event is a (type of 1-{_MAX_EVENT_TYPE} characters, data dict) pair,"
                    f" not {entry!r}.",
                    {"field": "events"},
                )
        tasks, table = self._t.tasks, self._t.events

        def write() -> list[Event]:
            if self._locked(tasks.select(tasks.id).where(tasks.id == task_id)).first() is None:
                raise TaskNotFound(task_id)
            last = table.select(fn.MAX(table.seq)).where(table.task == task_id).scalar() or 0
            now = utcnow()
            appended = [
                Event(task_id=task_id, seq=last + offset, type=kind, created_at=now, data=data)
                for offset, (kind, data) in enumerate(entries, start=1)
            ]
            if appended:
                table.insert_many(
                    [
                        {
                            "task": task_id,
                            "seq": event.seq,
                            "type": event.type,
                            "created_at": now,
                            "data": event.data,
                        }
                        for event in appended
                    ]
                ).execute()
            return appended

        return self._engine.write(write)

    def list_events(self, task_id: str, *, after: int = 0, limit: int | None = None) -> list[Event]:
        """Events with ``seq > after``, ascending; at most ``limit`` of them."""
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise InvalidRequest("'after' must be a sequence number >= 0.", {"field": "after"})
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise InvalidRequest("'limit' must be a positive integer.", {"field": "limit"})
        table = self._t.events

        def read() -> list[Event]:
            query = (
                table.select()
                .where((table.task == task_id) & (table.seq > after))
                .order_by(table.seq)
            )
            if limit is not None:
                query = query.limit(limit)
            found = [event_from_row(row) for row in query]
            if not found:
                self._require_task(task_id)
            return found

        return self._engine.read(read)

    def last_event_seq(self, task_id: str) -> int:
        """The highest ``seq`` of the task's events, 0 when it has none."""
        table = self._t.events

        def read() -> int:
            last = table.select(fn.MAX(table.seq)).where(table.task == task_id).scalar()
            if last is None:
                self._require_task(task_id)
            return last or 0

        return self._engine.read(read)

    # child processes

    def record_process(self, pid: int, start_time: float, owner: str, kind: str) -> None:
        """Remember a child process, so that a restarted server can find it if it outlives us."""
        table = self._t.processes
        self._engine.write(
            lambda: table.insert(
                pid=pid, start_time=start_time, owner=owner, kind=kind, created_at=utcnow()
            ).execute()
        )

    def forget_process(self, pid: int, start_time: float) -> None:
        table = self._t.processes
        self._engine.write(
            lambda: (
                table.delete()
                .where((table.pid == pid) & (table.start_time == start_time))
                .execute()
            )
        )

    def recorded_processes(self) -> list[tuple[int, float, str, str]]:
        """``(pid, start_time, owner, kind)`` of every remembered process, oldest first."""
        table = self._t.processes
        query = table.select(table.pid, table.start_time, table.owner, table.kind).order_by(
            table.id
        )
        return self._engine.read(lambda: [tuple(row) for row in query.tuples()])

    # helpers: each runs inside a transaction opened by a public method

    def _locked(self, query: Any, mode: str = "FOR UPDATE") -> Any:
        """``query`` with a row lock on PostgreSQL; on SQLite the write lock excludes others."""
        return query.for_update(mode) if self._engine.is_postgres else query

    def _session(self, session_id: str) -> Session:
        sessions = self._t.sessions
        row = sessions.get_or_none(sessions.id == session_id)
        if row is None:
            raise SessionNotFound(session_id)
        return session_from_row(row)

    def _count(self, session_id: str, changes: dict[str, int], cost: float | None = None) -> None:
        """Move the session's task counters (and cost) along with a task change."""
        sessions = self._t.sessions
        values = {}
        for status, delta in changes.items():
            column = getattr(sessions, count_column(status))
            values[column] = column + delta
        if cost:
            values[sessions.total_cost_usd] = sessions.total_cost_usd + cost
        sessions.update(values).where(sessions.id == session_id).execute()

    def _by_idempotency_key(self, session_id: str, key: str) -> Task | None:
        tasks = self._t.tasks
        row = tasks.get_or_none((tasks.session == session_id) & (tasks.idempotency_key == key))
        return None if row is None else task_from_row(row)

    def _require_task(self, task_id: str) -> None:
        tasks = self._t.tasks
        if not tasks.select(tasks.id).where(tasks.id == task_id).exists():
            raise TaskNotFound(task_id)

    def _tasks_with_status(self, status: str, session_id: str | None) -> list[Task]:
        tasks = self._t.tasks
        condition = paging.all_of(
            tasks.status == status,
            None if session_id is None else tasks.session == session_id,
        )
        query = tasks.select().where(condition).order_by(*paging.ordering(tasks, "asc"))
        return self._engine.read(lambda: [task_from_row(row) for row in query])

    def _transition(self, task_id: str, target: str, values: dict[Any, Any]) -> Task:
        tasks = self._t.tasks
        allowed = sorted(transitions.predecessors(target))

        def write() -> Task:
            query = tasks.select(tasks.status, tasks.session).where(tasks.id == task_id)
            current = self._locked(query).first()
            if current is None:
                raise TaskNotFound(task_id)
            changes = {tasks.status: target, tasks.updated_at: utcnow(), **values}
            updated = (
                tasks.update(changes)
                .where((tasks.id == task_id) & tasks.status.in_(allowed))
                .execute()
            )
            if updated == 0:
                raise transitions.illegal(task_id, current.status, target)
            self._count(
                current.session_id, {current.status: -1, target: 1}, values.get(tasks.cost_usd)
            )
            return task_from_row(tasks.get_by_id(task_id))

        return self._engine.write(write)

    def _page(
        self,
        model: type[Model],
        condition: Expression | None,
        statuses: frozenset[str] | None,
        request: paging.PageRequest,
    ) -> tuple[list[Model], bool]:
        """One page of rows (``condition`` includes the cursor) and whether more follow.

        With several statuses, each is read from its own ``(status, created_at,
        id)`` index range and the results merged, so no query has to sort every
        matching row (which an ``IN`` list over the index would).
        """
        order = paging.ordering(model, request.order)

        def fetch(status_condition: Expression | None) -> list[Model]:
            query = model.select().order_by(*order).limit(request.limit + 1)
            return list(_where(query, paging.all_of(condition, status_condition)))

        if statuses is None:
            rows = fetch(None)
        else:
            rows = [row for status in sorted(statuses) for row in fetch(model.status == status)]
            if _merges(statuses):
                rows.sort(key=lambda row: (row.created_at, row.id), reverse=request.order == "desc")
        return rows[: request.limit], len(rows) > request.limit

    def _finish_page(self, items: list[Any], has_more: bool) -> Page:
        last = items[-1] if items and has_more else None
        cursor = None if last is None else paging.encode_cursor(last.created_at, last.id)
        return Page(items=items, has_more=has_more, next_cursor=cursor)
