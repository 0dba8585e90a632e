"""The store: the single source of truth for sessions, tasks, their events and child processes.

Every public method is one short transaction (see ``engine`` for the
concurrency story) and returns the frozen structs of ``aicli.contract``, never a
row object, so results can cross threads and actors freely.

A session row carries its task counts per status and its total cost, updated
in the transaction that creates or moves a task, so that reading or listing
sessions costs the same whether they ran ten tasks or a million.

The hot calls (a handful per task, one per read request) are SQL written out
by hand in the column orders of ``rows``: building a statement through Peewee's
query objects and instantiating its row models cost several times the database
work. Peewee still runs every statement (errors, hooks, transactions), and
keeps the schema and the migrations. Writes use as few statements as their
guarantees allow: a transition is one ``UPDATE ... RETURNING`` plus the
counters' ``UPDATE``, and ``RETURNING`` hands back the row a caller gets
(SQLite has it since 3.35).

Times go in and come out as aware UTC datetimes. ``list_tasks`` time filters
are exclusive at both ends, as their names read: ``created_after`` keeps rows
with ``created_at > created_after`` and ``created_before`` rows with
``created_at < created_before``; a row created exactly at a bound is outside.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import msgspec
from peewee import IntegrityError

from aicli.contract import (
    DEFAULT_APPROVAL_TIMEOUT_S,
    TERMINAL_STATUSES,
    ApprovalMode,
    Event,
    Page,
    PermissionMode,
    Principal,
    Session,
    SessionStatus,
    Task,
    TaskStatus,
    TaskSubmit,
    new_id,
    utcnow,
)
from aicli.errors import (
    IllegalTransition,
    InvalidRequest,
    LimitExceeded,
    NotOwner,
    SessionClosed,
    SessionNotFound,
    StorageError,
    TaskNotFound,
)
from aicli.storage import (
    admission,
    database,
    idempotency,
    migrations,
    paging,
    transitions,
    usage,
)
from aicli.storage.approvals import Approvals
from aicli.storage.approvals import event_of as approval_event
from aicli.storage.credentials import PrincipalCredentials
from aicli.storage.ended import EndedTasks
from aicli.storage.engine import Engine
from aicli.storage.fields import from_db_time, to_db_float, to_db_time, to_json_text
from aicli.storage.nodes import Nodes
from aicli.storage.ownership import Ownership
from aicli.storage.principals import Principals
from aicli.storage.retention import Retention
from aicli.storage.rows import (
    EVENT_COLUMNS,
    SESSION_COLUMNS,
    TASK_COLUMNS,
    TASK_JSON_ROW,
    event_from_row,
    session_from_row,
    stored_value,
    task_from_row,
)
from aicli.storage.schema import count_column
from aicli.storage.secret_key import SecretKey
from aicli.storage.transcripts import Transcripts

_SESSION_UPDATABLE = frozenset({"status", "claude_session_id", "last_active_at"})
_UNLIMITED = 2**62
_PENDING_EVENT = to_json_text({"status": TaskStatus.PENDING})  # a new task's first event
_IN_CHUNK = 500
_TASK_CREATED_AT = TASK_COLUMNS.split(", ").index("created_at")
_json_rows = msgspec.json.Decoder(list[list[Any]]).decode
_MAX_EVENT_TYPE = 64  # the width of task_events.type
LEASE_CONNECTIONS = 2  # the lease actor's, and a reader of the live nodes at once


def open_store(url: str | None = None, *, secret_key: SecretKey | None = None) -> Store:
    """Connect to ``url`` (default: ``resolve_database_url()``) and migrate it to the latest.

    ``secret_key`` seals principals' own credentials (default: none configured, so the
    default file next to a SQLite database, and none with PostgreSQL).
    """
    url = database.resolve_database_url(url)
    engine = Engine(database.connect(url), url)
    try:
        migrations.migrate(engine)
        engine.ping()
    except BaseException:
        engine.close()
        raise
    lease_engine = None
    if engine.is_postgres:  # renewals must not queue behind a busy pool: a late one fences
        lease_engine = Engine(database.connect(url, max_connections=LEASE_CONNECTIONS), url)
    return Store(engine, lease_engine, secret_key)


def _where(conditions: Sequence[str]) -> str:
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _merges(statuses: frozenset[str] | None) -> bool:
    """Whether a page is merged from one query per status (and so needs a snapshot)."""
    return statuses is not None and len(statuses) > 1


def _aware(value: datetime | None, field: str) -> datetime | None:
    if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
        raise InvalidRequest(f"'{field}' must be a time with a UTC offset.", {"field": field})
    return value


_GET_SESSION = f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?"
_SESSION_STATUS_EPOCH = "SELECT status, owner_epoch FROM sessions WHERE id = ?"
_SESSION_EPOCH = "SELECT owner_epoch FROM sessions WHERE id = ?"
# A claim's writes name its epoch: a statement of a claim that another came after matches no row.
_EPOCH_OF_TASK = "(SELECT owner_epoch FROM sessions WHERE sessions.id = tasks.session_id)"
_INSERT_SESSION = (
    "INSERT INTO sessions (id, status, workdir, model, permission_mode, allowed_tools,"
    " disallowed_tools, append_system_prompt, max_turns, metadata, created_at, updated_at,"
    " owner, approvals, approval_timeout_s, network_domains, read_paths, tools, n_pending,"
    " n_running, n_completed, n_failed, n_cancelled, total_cost_usd, stored_bytes)"
    f" VALUES ({_marks(18)}, 0, 0, 0, 0, 0, 0, ?)"
)
_N_PENDING = count_column(TaskStatus.PENDING)
_N_CANCELLED = count_column(TaskStatus.CANCELLED)
# Takes the session's row lock on PostgreSQL, so a close waits for the new task, and
# hands out the task's place in the session's queue (``seq``): the order tasks run in.
_COUNT_NEW_TASK = (
    f"UPDATE sessions SET {_N_PENDING} = {_N_PENDING} + 1, last_seq = last_seq + 1,"
    " stored_bytes = stored_bytes + ?"
    f" WHERE id = ? AND status <> '{SessionStatus.CLOSED}' AND {_N_PENDING} < ?"
    f" RETURNING last_seq, {_N_PENDING}"
)
_SESSION_FULLNESS = f"SELECT status, {count_column(TaskStatus.PENDING)} FROM sessions WHERE id = ?"
# What a submit sets is the submit's fields, by name: a new one needs only its column.
_SUBMITTED = TaskSubmit.__struct_fields__
_INSERT_TASK = (
    "INSERT INTO tasks (id, session_id, status, created_at, updated_at, idempotency_key,"
    f" idempotency_fingerprint, seq, {', '.join(_SUBMITTED)})"
    f" VALUES ({_marks(8 + len(_SUBMITTED))})"
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
_CLOSE_SESSION = (
    f"UPDATE sessions SET status = '{SessionStatus.CLOSED}', updated_at = ?"
    f" WHERE id = ? AND status <> '{SessionStatus.CLOSED}' RETURNING id"
)
_CANCEL_PENDING_OF_SESSION = (
    f"UPDATE tasks SET status = '{TaskStatus.CANCELLED}', error = ?, completed_at = ?,"
    " updated_at = ?"
    f" WHERE session_id = ? AND status = '{TaskStatus.PENDING}' RETURNING id"
)
_CLOSED_COUNTS = (
    f"UPDATE sessions SET {_N_PENDING} = {_N_PENDING} - ?,"
    f" {_N_CANCELLED} = {_N_CANCELLED} + ? WHERE id = ?"
)
# Every call that moves a task locks its session's row first, as a start and a close
# do: one lock order, so PostgreSQL never has two of them wait on each other.
_LOCK_SESSION_OF_TASK = (
    "SELECT id FROM sessions WHERE id = (SELECT session_id FROM tasks WHERE id = ?) FOR UPDATE"
)
_RUNNING_OF_SESSION = (
    f"SELECT id FROM tasks WHERE session_id = ? AND status = '{TaskStatus.RUNNING}'"
)
_RUNNING_TASKS = (
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE status = '{TaskStatus.RUNNING}'"
    f" ORDER BY {paging.ordering('asc')}"
)
_RUNNING_TASKS_OF_NODE = (
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE status = '{TaskStatus.RUNNING}'"
    " AND session_id IN (SELECT id FROM sessions WHERE owner_node = ?)"
    f" ORDER BY {paging.ordering('asc')}"
)
_HAS_PENDING = (
    f"SELECT 1 FROM tasks WHERE session_id = ? AND status = '{TaskStatus.PENDING}' LIMIT 1"
)
_GET_TASK = f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"
_NO_AWAITED_APPROVAL = "UPDATE tasks SET awaiting_approval = NULL WHERE id = ?"
_SESSION_OWNER = "SELECT owner FROM sessions WHERE id = ?"
_OPEN_OF_OWNER = f"SELECT id FROM sessions WHERE owner = ? AND status <> '{SessionStatus.CLOSED}'"
_TASK_OWNER = (
    "SELECT tasks.session_id, sessions.owner FROM tasks"
    " JOIN sessions ON sessions.id = tasks.session_id WHERE tasks.id = ?"
)
_TASK_BY_KEY = f"SELECT {TASK_COLUMNS} FROM tasks WHERE session_id = ? AND idempotency_key = ?"
_TASK_STATUS = "SELECT status FROM tasks WHERE id = ?"
_TASK_EXISTS = "SELECT 1 FROM tasks WHERE id = ?"
_PENDING_IDS = (
    f"SELECT id FROM tasks WHERE session_id = ? AND status = '{TaskStatus.PENDING}' ORDER BY seq"
)
_LAST_SEQ = "SELECT MAX(seq) FROM task_events WHERE task_id = ?"
# One statement where the write lock already serialises appenders (SQLite). On
# PostgreSQL the row lock comes first and this in a statement after it: a statement
# that waited for a lock still reads other rows (the last seq, the session's epoch)
# with the snapshot it began with, from before the writer it waited for committed.
_TASK_LAST_SEQ = (
    f"SELECT ({_LAST_SEQ.replace('?', 'tasks.id')}), {_EPOCH_OF_TASK} FROM tasks WHERE id = ?"
)
_EVENTS_AFTER = (
    f"SELECT {EVENT_COLUMNS} FROM task_events WHERE task_id = ? AND seq > ? ORDER BY seq"
)
# The stored text of a row, as ``paging.fitting`` weighs a page by it.
_TASK_SIZE = usage.TASK_SIZE
_SESSION_SIZE = "COALESCE(LENGTH(metadata), 0) + COALESCE(LENGTH(append_system_prompt), 0)"
_EVENT_SIZES = (
    "SELECT seq, LENGTH(data) FROM task_events WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?"
)
_EVENTS_UP_TO = (
    f"SELECT {EVENT_COLUMNS} FROM task_events WHERE task_id = ? AND seq > ? AND seq <= ?"
    " ORDER BY seq"
)
# A page with more stored text than this is read row by row (see ``_page``).
_JSON_PAGE_MAX = 256 * 1024
_INSERT_EVENTS = "INSERT INTO task_events (task_id, seq, type, created_at, data) VALUES "
_EVENT_MARKS = f"({_marks(5)})"


class Store:
    def __init__(
        self,
        engine: Engine,
        lease_engine: Engine | None = None,
        secret_key: SecretKey | None = None,
    ) -> None:
        """``lease_engine``: connections of the node's lease alone (default: ``engine``'s);
        ``secret_key``: what seals principals' own credentials (default: ``open_store``'s)."""
        self._engine = engine
        self._lease_engine = lease_engine
        self._execute = engine.execute
        self._for_update = " FOR UPDATE" if engine.is_postgres else ""
        self._session_updates: dict[tuple[tuple[str, ...], bool], str] = {}
        self._task_updates: dict[tuple[tuple[str, ...], str, bool], str] = {}
        self._count_moves: dict[tuple[str, str, bool, str | None], str] = {}
        self._ended = EndedTasks()
        self.principals = Principals(engine)
        self.credentials = PrincipalCredentials(engine, secret_key or SecretKey(engine.url))
        self.approvals = Approvals(engine, self._append, self._lock_session_of)
        self.nodes = Nodes(lease_engine or engine)
        self.ownership = Ownership(engine, self._fail_running_of_session)
        self.transcripts = Transcripts(engine)
        self.retention = Retention(engine, self._ended.forget)
        self.database_url = engine.url

    @property
    def is_postgres(self) -> bool:
        return self._engine.is_postgres

    def close(self) -> None:
        self._engine.close()
        if self._lease_engine is not None:
            self._lease_engine.close()

    def ping(self) -> None:
        self._engine.ping()

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
        owner: str | None = None,
        approvals: str | None = None,
        approval_timeout_s: float | None = None,
        network_domains: Iterable[str] = (),
        read_paths: Iterable[str] = (),
        tools: Iterable[str] | None = None,
        max_open: int | None = None,
        max_owned: int | None = None,
    ) -> Session:
        """A new idle session; ``LimitExceeded`` past ``max_open`` open sessions in all or
        ``max_owned`` of ``owner``'s, counted in the insert's own transaction (``admission``),
        and ``StorageLimitExceeded`` if its metadata and system prompt would take ``owner``
        past its ``max_stored_bytes`` (``usage``)."""
        if permission_mode is not None and permission_mode not in tuple(PermissionMode):
            raise InvalidRequest(
                f"'permission_mode' must be among {', '.join(tuple(PermissionMode))}.",
                {"field": "permission_mode"},
            )
        now = utcnow()
        session = Session(
            id=new_id(),
            status=SessionStatus.IDLE,
            workdir=workdir,
            model=model,
            permission_mode=permission_mode,
            allowed_tools=tuple(allowed_tools),
            disallowed_tools=tuple(disallowed_tools),
            append_system_prompt=append_system_prompt,
            max_turns=max_turns,
            metadata=dict(metadata or {}),
            owner=owner,
            approvals=ApprovalMode(approvals or ApprovalMode.OFF),
            approval_timeout_s=to_db_float(approval_timeout_s or DEFAULT_APPROVAL_TIMEOUT_S),
            network_domains=tuple(network_domains),
            read_paths=tuple(read_paths),
            tools=None if tools is None else tuple(tools),
            created_at=now,
            updated_at=now,
        )
        stored_now = to_db_time(now)
        metadata_text = to_json_text(session.metadata)
        size = usage.text_size(metadata_text, append_system_prompt)
        params = (
            session.id,
            session.status,
            workdir,
            model,
            permission_mode,
            to_json_text(list(session.allowed_tools)),
            to_json_text(list(session.disallowed_tools)),
            append_system_prompt,
            max_turns,
            metadata_text,
            stored_now,
            stored_now,
            owner,
            session.approvals,
            session.approval_timeout_s,
            to_json_text(list(session.network_domains)),
            to_json_text(list(session.read_paths)),
            None if session.tools is None else to_json_text(list(session.tools)),
            size,
        )

        def write() -> None:
            admission.admit(self._engine, owner, max_open, max_owned)
            stored_limit = usage.limit_of(self._engine, owner=owner)
            if stored_limit is not None:
                usage.ensure_room(self._engine, stored_limit, size)
            self._execute(_INSERT_SESSION, params)

        self._engine.write(write)
        return session

    def get_session(self, session_id: str) -> Session:
        return self._engine.read(lambda: self._session(session_id))

    def list_sessions(
        self,
        *,
        statuses: Iterable[str] | None = None,
        owner: str | None = None,
        limit: int = paging.DEFAULT_LIMIT,
        cursor: str | None = None,
        order: str = "desc",
    ) -> Page:
        request = paging.page_request(limit, cursor, order)
        chosen = paging.status_filter(statuses, tuple(SessionStatus))
        conditions, params = paging.window(request)
        if owner is not None:
            conditions.insert(0, "owner = ?")
            params.insert(0, owner)
        return self._engine.read(
            lambda: self._page(
                "sessions",
                SESSION_COLUMNS,
                session_from_row,
                conditions,
                params,
                chosen,
                request,
                size=_SESSION_SIZE,
            ),
            snapshot=_merges(chosen),
        )

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
        if "status" in fields and status not in tuple(SessionStatus):
            raise InvalidRequest(f"No session status {status!r}.", {"field": "status"})
        last_active_at = _aware(fields.get("last_active_at"), "last_active_at")
        if last_active_at is not None:
            fields["last_active_at"] = to_db_time(last_active_at)
        names = tuple(sorted(fields))
        stays_open = "status" in fields and status != SessionStatus.CLOSED
        sql = self._session_update(names, stays_open)

        def write() -> Session:
            params = [*(fields[name] for name in names), to_db_time(utcnow()), session_id]
            row = self._execute(sql, params).fetchone()
            if row is None:
                current = self._session(session_id)
                raise IllegalTransition(
                    f"Session '{session_id}' is {current.status} and cannot become {status}.",
                    {"session_id": session_id, "from": current.status, "to": status},
                )
            return session_from_row(row)

        return self._engine.write(write)

    def open_session_count(self, owner: str | None = None) -> int:
        """Open sessions, of everyone or of ``owner``."""
        sql = f"SELECT COUNT(*) FROM sessions WHERE status <> '{SessionStatus.CLOSED}'"
        if owner is None:
            return self._engine.read(lambda: self._execute(sql).fetchone()[0])
        return self._engine.read(
            lambda: self._execute(sql + " AND owner = ?", (owner,)).fetchone()[0]
        )

    def session_owner(self, session_id: str) -> str | None:
        """Who opened the session (None: no one, before principals); one indexed read."""
        row = self._engine.read(lambda: self._execute(_SESSION_OWNER, (session_id,)).fetchone())
        if row is None:
            raise SessionNotFound(session_id)
        return row[0]

    def task_owner(self, task_id: str) -> tuple[str, str | None]:
        """The task's session and that session's owner, in one read, whether the task ended
        or not: a caller's check costs the same for an unknown id as for someone else's."""
        row = self._engine.read(lambda: self._execute(_TASK_OWNER, (task_id,)).fetchone())
        if row is None:
            raise TaskNotFound(task_id)
        return row[0], row[1]

    def task_ended(self, task_id: str) -> bool:
        """Whether the task has ended, from its status alone (a large answer is not read)."""
        row = self._engine.read(lambda: self._execute(_TASK_STATUS, (task_id,)).fetchone())
        if row is None:
            raise TaskNotFound(task_id)
        return row[0] in TERMINAL_STATUSES

    # tasks

    def create_task(
        self,
        session_id: str,
        request: TaskSubmit | None = None,
        *,
        idempotency_key: str | None = None,
        max_pending: int | None = None,
        task_id: str | None = None,
        **fields: Any,
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
        if request is None:  # the fields themselves: the store trusts what it is given
            request = TaskSubmit(**fields)
        given = {name: getattr(request, name) for name in _SUBMITTED}
        given["metadata"] = dict(given["metadata"] or {})
        submitted = [stored_value(value) for value in given.values()]
        size = usage.text_size(*submitted, _PENDING_EVENT)
        lock_session = _SESSION_OWNER + self._for_update
        limit = _UNLIMITED if max_pending is None else max_pending
        fingerprint = None
        if idempotency_key is not None:
            fingerprint = idempotency.fingerprint(session_id, given)

        def write() -> tuple[Task, bool]:
            stored_limit = usage.limit_of(self._engine, session_id=session_id)
            if idempotency_key is not None:
                # Lock before looking, so that racers with one key take turns.
                session = self._execute(lock_session, (session_id,)).fetchone()
                if session is None:
                    raise SessionNotFound(session_id)
                first = idempotency.first_task(
                    self._engine, session_id, session[0], idempotency_key, fingerprint
                )
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

    def task_for_idempotency_key(self, session_id: str, idempotency_key: str) -> Task | None:
        """The task the session accepted under ``idempotency_key``, if any."""
        return self._engine.read(lambda: self._by_idempotency_key(session_id, idempotency_key))

    def get_task(self, task_id: str) -> Task:
        """The task; ``queue_position`` is left ``None`` (the session actor knows it).

        An ended task kept (``EndedTasks``) is answered as kept once its row is seen to
        exist still: retention, on any node, may have deleted it, and only the pruning
        node's own cache is told.
        """
        ended = self._ended.get(task_id)

        def read() -> Task:
            if ended is not None:
                if self._execute(_TASK_EXISTS, (task_id,)).fetchone() is None:
                    self._ended.forget((task_id,))
                    raise TaskNotFound(task_id)
                return ended
            row = self._execute(_GET_TASK, (task_id,)).fetchone()
            if row is None:
                raise TaskNotFound(task_id)
            return self._ended.from_row(row)

        if ended is not None:
            return self._engine.read(read)
        return self._ended.read_once(task_id, lambda: self._engine.read(read))

    def list_tasks(
        self,
        *,
        session_id: str | None = None,
        statuses: Iterable[str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        owner: str | None = None,
        limit: int = paging.DEFAULT_LIMIT,
        cursor: str | None = None,
        order: str = "desc",
    ) -> Page:
        """A page of tasks; see the module docstring for the time window. ``owner``: only
        tasks of sessions that principal opened."""
        request = paging.page_request(limit, cursor, order)
        chosen = paging.status_filter(statuses, tuple(TaskStatus))
        conditions, params = paging.window(
            request,
            _aware(created_after, "created_after"),
            _aware(created_before, "created_before"),
        )
        if session_id is not None:
            conditions.insert(0, "session_id = ?")
            params.insert(0, session_id)
        if owner is not None:
            conditions.insert(0, "session_id IN (SELECT id FROM sessions WHERE owner = ?)")
            params.insert(0, owner)
        return self._engine.read(
            lambda: self._page(
                "tasks",
                TASK_COLUMNS,
                self._ended.from_row,
                conditions,
                params,
                chosen,
                request,
                size=_TASK_SIZE,
                json_row=None if self.is_postgres else TASK_JSON_ROW,
            ),
            snapshot=_merges(chosen),
        )

    def start_next_task(self, session_id: str, *, epoch: int | None = None) -> Task | None:
        """Take the session's next task: pending -> running, committed, with its event.

        The store decides what runs next: the pending task with the lowest
        ``seq``, and nothing while another task of the session runs or once the
        session is closed. ``None`` when there is nothing to start. The session
        row is locked first, so two callers can never both start a task of
        one session. With ``epoch`` (the caller's claim on the session),
        ``NotOwner`` if a later claim holds the session.
        """
        lock_session = _SESSION_STATUS_EPOCH + self._for_update

        def write() -> Task | None:
            row = self._execute(lock_session, (session_id,)).fetchone()
            if row is None:
                raise SessionNotFound(session_id)
            if epoch is not None and row[1] != epoch:
                raise _not_owner(session_id, epoch)
            if row[0] == SessionStatus.CLOSED:
                return None
            now = to_db_time(utcnow())
            started = self._execute(_START_NEXT, (now, now, session_id, session_id)).fetchone()
            if started is None:
                return None
            task = task_from_row(started)
            # The counters and the session's move to busy in one statement (not closed: seen above).
            self._execute(
                self._count_move(TaskStatus.PENDING, TaskStatus.RUNNING, False, SessionStatus.BUSY),
                (now, now, session_id),
            )
            self._append(task.id, [("status", task.status_event())])
            return task

        return self._engine.write(write)

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
        events: Sequence[tuple[str, dict[str, Any]]] = (),
        epoch: int | None = None,
    ) -> Task:
        """running -> completed | failed | cancelled, or pending -> cancelled, in one commit.

        Writes ``events`` (what carried the outcome), the move, its ``status``
        event, and the session's return to ``idle`` together, so no reader sees
        one without the others. Arguments left ``None`` keep what the task holds.
        With ``epoch``, the move is made only while that claim holds the session
        (else ``NotOwner``), checked in the move's own statement.
        """
        if status not in TERMINAL_STATUSES:
            raise IllegalTransition(
                f"'{status}' is not a terminal task status.", {"task_id": task_id, "to": status}
            )
        values = self._finish_values(output, error, cost_usd, num_turns, duration_ms, usage)
        entries = self._checked_events(events)
        predecessors = transitions.predecessors(status)

        def write() -> Task:
            self._lock_session_of(task_id)
            task = self._finish(task_id, status, values, cost_usd, predecessors, entries, epoch)
            if task is None:
                raise self._illegal(task_id, status, epoch)
            return task

        return self._ended.keep(self._engine.write(write))

    def cancel_pending(self, task_id: str, error: str) -> Task | None:
        """pending -> cancelled with its event; ``None`` if the task was no longer pending."""
        values = self._finish_values(None, error, None, None, None, None)

        def write() -> Task | None:
            self._lock_session_of(task_id)
            task = self._finish(task_id, TaskStatus.CANCELLED, values, None, (TaskStatus.PENDING,))
            if task is None:
                self._require_task(task_id)
            return task

        return self._engine.write(write)

    def close_session(self, session_id: str, pending_error: str) -> tuple[list[str], str | None]:
        """Close the session and cancel its pending tasks, in one commit.

        Returns the ids of the tasks it cancelled and of the task still running,
        which its session actor must interrupt. Closing a closed session changes
        nothing and returns no ids.
        """

        def write() -> tuple[list[str], str | None]:
            now = to_db_time(utcnow())
            if self._execute(_CLOSE_SESSION, (now, session_id)).fetchone() is None:
                self._session(session_id)  # SessionNotFound, or it was closed already
                return [], None
            params = (pending_error, now, now, session_id)
            cancelled = [row[0] for row in self._execute(_CANCEL_PENDING_OF_SESSION, params)]
            if cancelled:
                count = len(cancelled)
                self._execute(_CLOSED_COUNTS, (count, count, session_id))
                data = {"status": TaskStatus.CANCELLED, "error": pending_error}
                for task_id in cancelled:  # each stores the error too
                    self._append(task_id, [("status", data)], extra_bytes=len(pending_error))
            running = self._execute(_RUNNING_OF_SESSION, (session_id,)).fetchone()
            return cancelled, None if running is None else running[0]

        return self._engine.write(write)

    def revoke_principal(
        self, principal_id: str, pending_error: str
    ) -> tuple[Principal, list[tuple[str, list[str], str | None]]]:
        """Revoke the principal and close its open sessions (``close_session``), in one commit.

        Returns it and, for each session it closed, ``(session id, cancelled task ids,
        running task id)``. A session it opens meanwhile waits for this commit and is then
        refused (``admission``); revoked already, only what is still open is closed.
        """

        def write() -> tuple[Principal, list[tuple[str, list[str], str | None]]]:
            principal = self.principals.revoke(principal_id)
            open_ids = [row[0] for row in self._execute(_OPEN_OF_OWNER, (principal_id,))]
            closed = [(sid, *self.close_session(sid, pending_error)) for sid in open_ids]
            return principal, closed

        return self._engine.write(write)

    def _fail_running_of_session(self, session_id: str, error: str) -> str | None:
        """Inside a write that holds the session's row: its running task fails; its id."""
        row = self._execute(_RUNNING_OF_SESSION, (session_id,)).fetchone()
        if row is None:
            return None
        values = self._finish_values(None, error, None, None, None, None)
        self._finish(row[0], TaskStatus.FAILED, values, None, (TaskStatus.RUNNING,))
        return row[0]

    def running_task_of(self, session_id: str) -> Task | None:
        """The session's running task, if one is (at most one ever is)."""
        sql = (
            f"SELECT {TASK_COLUMNS} FROM tasks"
            f" WHERE session_id = ? AND status = '{TaskStatus.RUNNING}'"
        )

        def read() -> Task | None:
            row = self._execute(sql, (session_id,)).fetchone()
            return None if row is None else task_from_row(row)

        return self._engine.read(read)

    def has_pending(self, session_id: str) -> bool:
        return self._engine.read(
            lambda: self._execute(_HAS_PENDING, (session_id,)).fetchone() is not None
        )

    def pending_task_ids(self, session_id: str) -> list[str]:
        """The ids of the session's pending tasks in acceptance order: queue positions, cheaply."""
        return self._engine.read(
            lambda: [row[0] for row in self._execute(_PENDING_IDS, (session_id,)).fetchall()]
        )

    def running_tasks(self, node_id: str | None = None) -> list[Task]:
        """Every running task (at most one a session), in acceptance order; with
        ``node_id``, only those of the sessions that node holds."""
        sql, params = (
            (_RUNNING_TASKS, ()) if node_id is None else (_RUNNING_TASKS_OF_NODE, (node_id,))
        )
        return self._engine.read(
            lambda: [task_from_row(row) for row in self._execute(sql, params).fetchall()]
        )

    def task_status_counts(self) -> dict[str, int]:
        """Tasks per status, every status present (for metrics)."""

        def read() -> dict[str, int]:
            counts = dict.fromkeys(tuple(TaskStatus), 0)
            sql = "SELECT status, COUNT(*) FROM tasks GROUP BY status"
            counts.update(dict(self._execute(sql).fetchall()))
            return counts

        return self._engine.read(read)

    # events

    def append_events(
        self,
        task_id: str,
        events: Iterable[tuple[str, dict[str, Any]]],
        *,
        epoch: int | None = None,
    ) -> list[Event]:
        """Append ``(type, data)`` entries with the next sequence numbers, in one transaction.

        Appenders to one task are serialised (SQLite: the write lock;
        PostgreSQL: a row lock on the task), so sequence numbers never collide
        and never leave gaps. With ``epoch``, ``NotOwner`` unless that claim holds
        the task's session (whoever takes the session over must fail the task,
        which waits for this lock, so nothing of the old claim lands after that).
        """
        entries = self._checked_events(events)
        # Events of a running turn: its durable end (``finish_task``) makes them durable too.
        return self._engine.write(lambda: self._append(task_id, entries, epoch), durable=False)

    def list_events(self, task_id: str, *, after: int = 0, limit: int | None = None) -> list[Event]:
        """Events with ``seq > after``, ascending; at most ``limit`` of them."""
        _check_after_limit(after, limit)
        sql, params = _EVENTS_AFTER, [task_id, after]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)

        def read() -> list[Event]:
            found = [event_from_row(row) for row in self._execute(sql, params).fetchall()]
            if not found:
                self._require_task(task_id)
            return found

        return self._engine.read(read)

    def event_page(
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
                self._require_task(task_id)
                return [], False
            taken = min(limit, paging.fitting((size for _, size in sizes), max_bytes))
            rows = self._execute(_EVENTS_UP_TO, (task_id, after, sizes[taken - 1][0])).fetchall()
            return [event_from_row(row) for row in rows], len(sizes) > taken

        return self._engine.read(read)

    # child processes

    def record_process(
        self,
        pid: int,
        start_time: float,
        owner: str,
        kind: str,
        *,
        session_id: str | None = None,
        node_id: str | None = None,
    ) -> None:
        """Remember a child process, so that a restarted server can find it if it outlives us
        (and every node can tell that the session's process lives: ``Ownership``)."""
        sql = (
            "INSERT INTO processes (pid, start_time, owner, kind, created_at, session_id, node_id)"
            f" VALUES ({_marks(7)})"
        )
        params = (pid, start_time, owner, kind, to_db_time(utcnow()), session_id, node_id)
        self._engine.write(lambda: self._execute(sql, params))

    def forget_process(self, pid: int, start_time: float) -> None:
        sql = "DELETE FROM processes WHERE pid = ? AND start_time = ?"
        self._engine.write(lambda: self._execute(sql, (pid, start_time)))

    def recorded_processes(self) -> list[tuple[int, float, str, str]]:
        """``(pid, start_time, owner, kind)`` of every remembered process, oldest first."""
        sql = "SELECT pid, start_time, owner, kind FROM processes ORDER BY id"
        return self._engine.read(lambda: [tuple(row) for row in self._execute(sql).fetchall()])

    # helpers: each runs inside a transaction opened by a public method

    def _session(self, session_id: str) -> Session:
        row = self._execute(_GET_SESSION, (session_id,)).fetchone()
        if row is None:
            raise SessionNotFound(session_id)
        return session_from_row(row)

    def _session_update(self, names: tuple[str, ...], stays_open: bool) -> str:
        key = (names, stays_open)
        sql = self._session_updates.get(key)
        if sql is None:
            assignments = ", ".join(f"{name} = ?" for name in (*names, "updated_at"))
            condition = f" AND status <> '{SessionStatus.CLOSED}'" if stays_open else ""
            sql = (
                f"UPDATE sessions SET {assignments} WHERE id = ?{condition}"
                f" RETURNING {SESSION_COLUMNS}"
            )
            self._session_updates[key] = sql
        return sql

    def _by_idempotency_key(self, session_id: str, key: str) -> Task | None:
        row = self._execute(_TASK_BY_KEY, (session_id, key)).fetchone()
        return None if row is None else task_from_row(row)

    def _require_task(self, task_id: str) -> None:
        if self._execute(_TASK_EXISTS, (task_id,)).fetchone() is None:
            raise TaskNotFound(task_id)

    @staticmethod
    def _checked_events(
        events: Iterable[tuple[str, dict[str, Any]]],
    ) -> list[tuple[str, dict[str, Any]]]:
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
        return entries

    def _append(
        self,
        task_id: str,
        entries: list[tuple[str, dict[str, Any]]],
        epoch: int | None = None,
        extra_bytes: int = 0,
    ) -> list[Event]:
        """Append ``entries``; the session's ``stored_bytes`` grows by their data and by
        ``extra_bytes`` (what the caller wrote besides, in the same transaction)."""
        # PostgreSQL: the lock first; what it guards is read by the next statement.
        lock = _TASK_EXISTS + self._for_update
        if self.is_postgres and self._execute(lock, (task_id,)).fetchone() is None:
            raise TaskNotFound(task_id)
        row = self._execute(_TASK_LAST_SEQ, (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(task_id)
        last, held = row
        if epoch is not None and held != epoch:
            raise _not_owner(task_id, epoch)
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

    @staticmethod
    def _finish_values(
        output: str | None,
        error: str | None,
        cost_usd: float | None,
        num_turns: int | None,
        duration_ms: int | None,
        usage: dict[str, int] | None,
    ) -> dict[str, Any]:
        given = {
            "output": output,
            "error": error,
            "cost_usd": to_db_float(cost_usd),
            "num_turns": num_turns,
            "duration_ms": duration_ms,
            "usage": None if usage is None else to_json_text(usage),
        }
        return {column: value for column, value in given.items() if value is not None}

    def _finish(
        self,
        task_id: str,
        target: str,
        values: dict[str, Any],
        cost: float | None,
        predecessors: tuple[str, ...],
        events: list[tuple[str, dict[str, Any]]] | None = None,
        epoch: int | None = None,
    ) -> Task | None:
        """Move the task to the terminal ``target`` from one of ``predecessors``, with all
        that goes with it (``events``, counters, the end of approvals its turn left
        pending, ``status`` event, the session back to idle); ``None`` when it was in none.

        Each attempt is ``UPDATE ... WHERE status = ?``: the check and the write are one
        statement, so two writers cannot both win, and the predecessor that matched is
        the status the session's counters move from.
        """
        now = to_db_time(utcnow())
        values = {**values, "completed_at": now}
        names = tuple(values)
        params = [target, now, *values.values(), task_id]
        if epoch is not None:
            params.append(epoch)
        for previous in predecessors:
            sql = self._task_update(names, previous, epoch is not None)
            row = self._execute(sql, params).fetchone()
            if row is not None:
                break
        else:
            return None
        task = task_from_row(row)
        expired = []
        if task.awaiting_approval is not None:  # so approvals of its turn wait: they end too
            task = msgspec.structs.replace(task, awaiting_approval=None)
            expired = self._expire_approvals(task.id, target)
        # A running task's end takes its session from busy back to idle, in the same statement.
        idle = SessionStatus.IDLE if previous == TaskStatus.RUNNING else None
        count_params: list[Any] = [to_db_float(cost)] if cost else []
        count_params += [now, now, task.session_id] if idle else [task.session_id]
        self._execute(self._count_move(previous, target, bool(cost), idle), count_params)
        self._append(
            task.id,
            [*(events or ()), *expired, ("status", task.status_event())],
            extra_bytes=usage.text_size(values.get("output"), values.get("error")),
        )
        return task

    def _expire_approvals(self, task_id: str, target: str) -> list[tuple[str, dict[str, Any]]]:
        """The pending approvals of an ending task expire, and it waits for none; their events.

        Asked only when the task's row names one: a task waits exactly while one of its
        approvals is pending (``approvals`` keeps that so), so most ends cost nothing here.
        """
        self._execute(_NO_AWAITED_APPROVAL, (task_id,))
        ended = f"The task ended ({target}) before this was decided."
        return [
            approval_event("approval_decided", approval)
            for approval in self.approvals.expired_of_task(task_id, ended)
        ]

    def _lock_session_of(self, task_id: str) -> None:
        if self.is_postgres:  # SQLite's one write lock already orders every writer
            self._execute(_LOCK_SESSION_OF_TASK, (task_id,))

    def _illegal(self, task_id: str, target: str, epoch: int | None = None) -> Exception:
        current = self._execute(_TASK_STATUS, (task_id,)).fetchone()
        if current is None:
            return TaskNotFound(task_id)
        if epoch is not None:
            held = self._execute(f"SELECT {_EPOCH_OF_TASK} FROM tasks WHERE id = ?", (task_id,))
            if held.fetchone()[0] != epoch:
                return _not_owner(task_id, epoch)
        return transitions.illegal(task_id, current[0], target)

    def _task_update(self, names: tuple[str, ...], previous: str, checked: bool = False) -> str:
        """The move of one task from ``previous``; ``checked``: only while an epoch (the
        last parameter) holds its session."""
        key = (names, previous, checked)
        sql = self._task_updates.get(key)
        if sql is None:
            assignments = ", ".join(f"{name} = ?" for name in ("status", "updated_at", *names))
            claim = f" AND {_EPOCH_OF_TASK} = ?" if checked else ""
            sql = (
                f"UPDATE tasks SET {assignments} WHERE id = ? AND status = '{previous}'{claim}"
                f" RETURNING {TASK_COLUMNS}"
            )
            self._task_updates[key] = sql
        return sql

    def _count_move(
        self, previous: str, target: str, with_cost: bool, session_to: str | None = None
    ) -> str:
        """Move one task between the session's counters; with ``session_to``, the session
        takes that status too (busy: unconditionally; idle: only from busy), with
        ``last_active_at`` and ``updated_at`` (two more parameters before the id)."""
        key = (previous, target, with_cost, session_to)
        sql = self._count_moves.get(key)
        if sql is None:
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
            sql = (
                f"UPDATE sessions SET {leaving} = {leaving} - 1, {entering} = {entering} + 1"
                f"{cost}{status} WHERE id = ?"
            )
            self._count_moves[key] = sql
        return sql

    def _page(
        self,
        table: str,
        columns: str,
        from_row: Callable[[Sequence[Any]], Any],
        conditions: list[str],
        params: list[Any],
        statuses: frozenset[str] | None,
        request: paging.PageRequest,
        size: str,
        json_row: str | None = None,
    ) -> Page:
        """One page (``conditions`` include the cursor's) and whether more follow.

        ``size`` is the SQL of a row's stored text: the keys and sizes of the page's
        rows are read first, and the page shortened to what fits ``paging.PAGE_BYTES``
        (see ``paging``) before any large row is read.

        With several statuses, each is read from its own ``(status, created_at,
        id)`` index range and the results merged, so no query has to sort every
        matching row (which an ``IN`` list over the index would). With
        ``json_row`` (SQLite), the rows come as one JSON array in one row (see
        ``rows.TASK_JSON_ROW``), put back in page order here: an aggregate does
        not promise to keep the order of its input.
        """
        tail = f" ORDER BY {paging.ordering(request.order)} LIMIT ?"
        reverse = request.order == "desc"

        def select(what: str, status: str | None) -> tuple[str, list[Any]]:
            where = conditions if status is None else [*conditions, "status = ?"]
            values = (
                [*params, request.limit + 1]
                if status is None
                else [*params, status, request.limit + 1]
            )
            return f"SELECT {what} FROM {table}{_where(where)}{tail}", values

        sized = [
            tuple(row)
            for status in ((None,) if statuses is None else sorted(statuses))
            for row in self._execute(*select(f"created_at, id, {size}", status))
        ]
        if _merges(statuses):
            sized.sort(key=lambda row: (from_db_time(row[0]), row[1]), reverse=reverse)
        taken = paging.fitting(row[2] for row in sized)
        if taken < min(len(sized), request.limit):
            request = paging.PageRequest(taken, request.order, request.after)
        if sum(row[2] or 0 for row in sized[: taken + 1]) > _JSON_PAGE_MAX:
            json_row = None  # the one text of the page would be one more copy of it all

        def fetch(status: str | None) -> list[Any]:
            sql, values = select(columns, status)
            if json_row is None:
                return [from_row(row) for row in self._execute(sql, values)]
            text = self._execute(f"SELECT json_group_array({json_row}) FROM ({sql})", values)
            rows = _json_rows(text.fetchone()[0])
            rows.sort(key=lambda row: (row[_TASK_CREATED_AT], row[0]), reverse=reverse)
            return [from_row(row) for row in rows]

        if statuses is None:
            items = fetch(None)
        else:
            items = [item for status in sorted(statuses) for item in fetch(status)]
            if _merges(statuses):
                items.sort(key=lambda item: (item.created_at, item.id), reverse=reverse)
        return paging.page_of(items, request)


def _check_after_limit(after: int, limit: int | None) -> None:
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise InvalidRequest("'after' must be a sequence number >= 0.", {"field": "after"})
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidRequest("'limit' must be a positive integer.", {"field": "limit"})


def _not_owner(subject: str, epoch: int) -> NotOwner:
    return NotOwner(
        f"The claim {epoch} on the session of {subject} has been taken over by a later one.",
        {"epoch": epoch},
    )
