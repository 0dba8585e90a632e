"""Sessions: their rows, their counters, and their close.

A session row carries its task counts per status and its total cost, updated in
the transaction that creates or moves a task (``task_queue``, ``task_outcomes``),
so that reading or listing sessions costs the same whether they ran ten tasks or
a million. Its status follows its tasks there too (busy while one runs); what is
set here is the Claude conversation it continues and its close.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aicli.contract import (
    DEFAULT_APPROVAL_TIMEOUT_S,
    ApprovalMode,
    Page,
    PermissionMode,
    Session,
    SessionListQuery,
    SessionStatus,
    TaskStatus,
    new_id,
    utcnow,
)
from aicli.contract.queries import given
from aicli.errors import InvalidRequest, SessionNotFound
from aicli.storage import admission, paging, usage
from aicli.storage.engine import Engine
from aicli.storage.events import Events
from aicli.storage.fields import to_db_float, to_db_time, to_json_text
from aicli.storage.listing import merges, read_page, statuses_of
from aicli.storage.rows import SESSION_COLUMNS, session_from_row
from aicli.storage.schema import count_column
from aicli.storage.sql import marks

_GET = f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?"
_OWNER = "SELECT owner FROM sessions WHERE id = ?"
_OPEN_OF_OWNER = f"SELECT id FROM sessions WHERE owner = ? AND status <> '{SessionStatus.CLOSED}'"
_OPEN_COUNT = f"SELECT COUNT(*) FROM sessions WHERE status <> '{SessionStatus.CLOSED}'"
_INSERT = (
    "INSERT INTO sessions (id, status, workdir, model, permission_mode, allowed_tools,"
    " disallowed_tools, append_system_prompt, max_turns, metadata, created_at, updated_at,"
    " owner, approvals, approval_timeout_s, network_domains, read_paths, tools, n_pending,"
    " n_running, n_completed, n_failed, n_cancelled, total_cost_usd, stored_bytes)"
    f" VALUES ({marks(18)}, 0, 0, 0, 0, 0, 0, ?)"
)
_SET_CLAUDE_SESSION = (
    f"UPDATE sessions SET claude_session_id = ?, updated_at = ? WHERE id = ?"
    f" RETURNING {SESSION_COLUMNS}"
)
# The stored text of a row, as ``paging.fitting`` weighs a page by it.
_SIZE = "COALESCE(LENGTH(metadata), 0) + COALESCE(LENGTH(append_system_prompt), 0)"
_N_PENDING = count_column(TaskStatus.PENDING)
_N_CANCELLED = count_column(TaskStatus.CANCELLED)
_CLOSE = (
    f"UPDATE sessions SET status = '{SessionStatus.CLOSED}', updated_at = ?"
    f" WHERE id = ? AND status <> '{SessionStatus.CLOSED}' RETURNING id"
)
_CANCEL_PENDING = (
    f"UPDATE tasks SET status = '{TaskStatus.CANCELLED}', error = ?, completed_at = ?,"
    " updated_at = ?"
    f" WHERE session_id = ? AND status = '{TaskStatus.PENDING}' RETURNING id"
)
_CLOSED_COUNTS = (
    f"UPDATE sessions SET {_N_PENDING} = {_N_PENDING} - ?,"
    f" {_N_CANCELLED} = {_N_CANCELLED} + ? WHERE id = ?"
)
_RUNNING_OF_SESSION = (
    f"SELECT id FROM tasks WHERE session_id = ? AND status = '{TaskStatus.RUNNING}'"
)


def _row_of(session: Session, metadata_text: str, size: int) -> tuple[Any, ...]:
    stored_now = to_db_time(session.created_at)
    return (
        session.id,
        session.status,
        session.workdir,
        session.model,
        session.permission_mode,
        to_json_text(list(session.allowed_tools)),
        to_json_text(list(session.disallowed_tools)),
        session.append_system_prompt,
        session.max_turns,
        metadata_text,
        stored_now,
        stored_now,
        session.owner,
        session.approvals,
        session.approval_timeout_s,
        to_json_text(list(session.network_domains)),
        to_json_text(list(session.read_paths)),
        None if session.tools is None else to_json_text(list(session.tools)),
        size,
    )


class Sessions:
    """Reached as ``Store.sessions``; ``events``: where a close tells each cancelled task."""

    def __init__(self, engine: Engine, events: Events) -> None:
        self._engine = engine
        self._execute = engine.execute
        self._events = events

    def create(
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
        metadata_text = to_json_text(session.metadata)
        size = usage.text_size(metadata_text, append_system_prompt)
        row = _row_of(session, metadata_text, size)

        def write() -> None:
            admission.admit(self._engine, owner, max_open, max_owned)
            stored_limit = usage.limit_of(self._engine, owner=owner)
            if stored_limit is not None:
                usage.ensure_room(self._engine, stored_limit, size)
            self._execute(_INSERT, row)

        self._engine.write(write)
        return session

    def get(self, session_id: str) -> Session:
        return self._engine.read(lambda: self.get_within(session_id))

    def get_within(self, session_id: str) -> Session:
        """Inside a transaction: the session, or ``SessionNotFound``."""
        row = self._execute(_GET, (session_id,)).fetchone()
        if row is None:
            raise SessionNotFound(session_id)
        return session_from_row(row)

    def list(self, query: SessionListQuery | None = None, /, **fields: Any) -> Page:
        """A page of sessions narrowed by ``query`` (or its fields as keywords)."""
        query = given(SessionListQuery, query, fields)
        request = paging.page_request(query.limit, query.cursor, query.order)
        chosen = statuses_of(query.status, SessionStatus)
        conditions, params = paging.window(request)
        if query.owner is not None:
            conditions.insert(0, "owner = ?")
            params.insert(0, query.owner)
        return self._engine.read(
            lambda: read_page(
                self._engine,
                "sessions",
                SESSION_COLUMNS,
                session_from_row,
                conditions,
                params,
                chosen,
                request,
                size=_SIZE,
            ),
            snapshot=merges(chosen),
        )

    def set_claude_session(self, session_id: str, claude_session_id: str | None) -> Session:
        """Remember the Claude conversation the session continues (closed or not); bumps
        ``updated_at``."""
        params = (claude_session_id, to_db_time(utcnow()), session_id)

        def write() -> Session:
            row = self._execute(_SET_CLAUDE_SESSION, params).fetchone()
            if row is None:
                raise SessionNotFound(session_id)
            return session_from_row(row)

        return self._engine.write(write)

    def open_count(self, owner: str | None = None) -> int:
        """Open sessions, of everyone or of ``owner``."""
        if owner is None:
            return self._engine.read(lambda: self._execute(_OPEN_COUNT).fetchone()[0])
        sql = _OPEN_COUNT + " AND owner = ?"
        return self._engine.read(lambda: self._execute(sql, (owner,)).fetchone()[0])

    def owner(self, session_id: str) -> str | None:
        """Who opened the session (None: no one, before principals); one indexed read."""
        row = self._engine.read(lambda: self._execute(_OWNER, (session_id,)).fetchone())
        if row is None:
            raise SessionNotFound(session_id)
        return row[0]

    def close(self, session_id: str, pending_error: str) -> tuple[list[str], str | None]:
        """Close the session and cancel its pending tasks, in one commit.

        Returns the ids of the tasks it cancelled and of the task still running,
        which its session actor must interrupt. Closing a closed session changes
        nothing and returns no ids.
        """

        def write() -> tuple[list[str], str | None]:
            now = to_db_time(utcnow())
            if self._execute(_CLOSE, (now, session_id)).fetchone() is None:
                self.get_within(session_id)  # SessionNotFound, or it was closed already
                return [], None
            params = (pending_error, now, now, session_id)
            cancelled = [row[0] for row in self._execute(_CANCEL_PENDING, params)]
            if cancelled:
                count = len(cancelled)
                self._execute(_CLOSED_COUNTS, (count, count, session_id))
                data = {"status": TaskStatus.CANCELLED, "error": pending_error}
                for task_id in cancelled:  # each stores the error too
                    self._events.append_within(
                        task_id, [("status", data)], extra_bytes=len(pending_error)
                    )
            running = self._execute(_RUNNING_OF_SESSION, (session_id,)).fetchone()
            return cancelled, None if running is None else running[0]

        return self._engine.write(write)

    def close_owned_within(
        self, owner: str, pending_error: str
    ) -> list[tuple[str, list[str], str | None]]:
        """Inside a write: close every open session of ``owner`` (``close``); for each,
        ``(session id, cancelled task ids, running task id)``."""
        open_ids = [row[0] for row in self._execute(_OPEN_OF_OWNER, (owner,))]
        return [(sid, *self.close(sid, pending_error)) for sid in open_ids]
