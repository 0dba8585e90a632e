"""Approvals: tool uses and questions that waited for a person, and how each was decided.

Reached as ``Store.approvals``. A request, a decision and an expiry each move
the approval, the task's ``awaiting_approval`` and the task's event log in one
transaction, so a reader never sees a decided approval whose task still waits
for it, nor an event for a change that did not commit. Deciding is
``UPDATE ... WHERE status = 'pending'``: a person, the timeout and the end of
the task race for it, and exactly one wins; the others get ``ApprovalDecided``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from aicli.contract import (
    Approval,
    ApprovalKind,
    ApprovalRule,
    ApprovalStatus,
    Page,
    TaskStatus,
    new_id,
    utcnow,
)
from aicli.contract.queries import ApprovalListQuery, given
from aicli.errors import ApprovalDecided, ApprovalNotFound, IllegalTransition, InvalidRequest
from aicli.storage import paging
from aicli.storage.engine import Engine
from aicli.storage.events import Events
from aicli.storage.fields import from_db_time, from_json_text, to_db_time, to_json_text
from aicli.storage.listing import statuses_of
from aicli.storage.rows import rules_from_json
from aicli.storage.sql import lock_session_of_task

RULE = "rule"  # decided_by of a use a remembered rule allowed
SYSTEM = "system"  # decided_by of a request its task's end (or a restart) expired
TIMEOUT = "timeout"  # decided_by of a request no one answered in time
MAX_RULES = 100  # a session's remembered rules: each session read carries them

_COLUMNS = (
    "id, session_id, task_id, kind, tool_name, input, suggestions, status, message,"
    " created_at, decided_at, decided_by"
)
_INSERT = f"INSERT INTO approvals ({_COLUMNS}) VALUES ({', '.join('?' * 12)})"
_GET = f"SELECT {_COLUMNS} FROM approvals WHERE id = ?"
_OWNER = (
    "SELECT approvals.session_id, sessions.owner FROM approvals"
    " JOIN sessions ON sessions.id = approvals.session_id WHERE approvals.id = ?"
)
_DECIDE = (
    "UPDATE approvals SET status = ?, message = ?, decided_at = ?, decided_by = ?"
    f" WHERE id = ? AND status = '{ApprovalStatus.PENDING}' RETURNING {_COLUMNS}"
)
# The running task waits for its oldest pending approval, or for none. An ended task's row
# never changes again (the store keeps it in memory as read): its end cleared the field.
_NEXT_AWAITED = (
    "UPDATE tasks SET awaiting_approval = (SELECT id FROM approvals WHERE task_id = tasks.id"
    f" AND status = '{ApprovalStatus.PENDING}' ORDER BY created_at, id LIMIT 1), updated_at = ?"
    f" WHERE id = ? AND status = '{TaskStatus.RUNNING}' RETURNING id"
)
_EXPIRE_OF_TASK = (
    f"UPDATE approvals SET status = '{ApprovalStatus.EXPIRED}', message = ?, decided_at = ?,"
    f" decided_by = '{SYSTEM}' WHERE task_id = ? AND status = '{ApprovalStatus.PENDING}'"
    f" RETURNING {_COLUMNS}"
)
_RULES = "SELECT approval_rules FROM sessions WHERE id = ?"
_SET_RULES = "UPDATE sessions SET approval_rules = ?, updated_at = ? WHERE id = ?"


def approval_from_row(row: Sequence[Any]) -> Approval:
    (
        approval_id, session_id, task_id, kind, tool_name, given, suggestions, status, message,
        created_at, decided_at, decided_by,
    ) = row  # fmt: skip
    return Approval(
        id=approval_id,
        session_id=session_id,
        task_id=task_id,
        kind=ApprovalKind(kind),
        tool_name=tool_name,
        input=from_json_text(given),
        suggestions=from_json_text(suggestions),
        status=ApprovalStatus(status),
        message=message,
        created_at=from_db_time(created_at),
        decided_at=None if decided_at is None else from_db_time(decided_at),
        decided_by=decided_by,
    )


# What an approval stores, as ``paging.fitting`` weighs a page by it.
_SIZE = "LENGTH(input) + LENGTH(suggestions) + COALESCE(LENGTH(message), 0) + LENGTH(tool_name)"


def event_of(
    kind: str, approval: Approval, decided: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """The task's event for ``approval``: ``approval_requested`` or ``approval_decided``.

    ``decided``: what the person sent besides the verdict (a changed input, answers), kept
    in the log so that what ran can be told after the fact."""
    return kind, {"approval": msgspec.to_builtins(approval), **(decided or {})}


def _row_of(approval: Approval) -> tuple[Any, ...]:
    return (
        approval.id,
        approval.session_id,
        approval.task_id,
        approval.kind,
        approval.tool_name,
        to_json_text(approval.input),
        to_json_text(approval.suggestions),
        approval.status,
        approval.message,
        to_db_time(approval.created_at),
        None if approval.decided_at is None else to_db_time(approval.decided_at),
        approval.decided_by,
    )


class Approvals:
    """Reached as ``Store.approvals``; ``events``: where each request and decision is told."""

    def __init__(self, engine: Engine, events: Events) -> None:
        self._engine = engine
        self._execute = engine.execute
        self._events = events

    def request(
        self,
        *,
        session_id: str,
        task_id: str,
        kind: ApprovalKind,
        tool_name: str,
        given: dict[str, Any],
        suggestions: list[Any],
        rule: bool = False,
    ) -> Approval:
        """Record what the CLI asks for the running task: pending, with the task waiting on
        it; or, with ``rule``, allowed at once by a remembered rule (nobody is asked).

        ``IllegalTransition`` if the task is not running (its turn is over)."""
        now = utcnow()
        asked = Approval(
            id=new_id(),
            session_id=session_id,
            task_id=task_id,
            kind=kind,
            tool_name=tool_name,
            input=given,
            suggestions=suggestions,
            status=ApprovalStatus.PENDING,
            message=None,
            created_at=now,
        )
        approval = asked
        if rule:
            approval = msgspec.structs.replace(
                asked, status=ApprovalStatus.ALLOWED, decided_at=now, decided_by=RULE
            )
        stored_now = to_db_time(now)

        def write() -> Approval:
            lock_session_of_task(self._engine, task_id)
            self._execute(_INSERT, _row_of(approval))
            # The task's wait, and the check that it runs: no row means the insert rolls back.
            if self._execute(_NEXT_AWAITED, (stored_now, task_id)).fetchone() is None:
                raise IllegalTransition(
                    f"Task '{task_id}' is not running; it cannot wait for an approval.",
                    {"task_id": task_id},
                )
            events = [event_of("approval_requested", asked)]
            if rule:  # watchers see the request and the rule's answer, as for a person's
                events.append(event_of("approval_decided", approval))
            self._events.append_within(task_id, events)
            return approval

        return self._engine.write(write)

    def decide(
        self,
        approval_id: str,
        status: ApprovalStatus,
        decided_by: str,
        message: str | None = None,
        rule: ApprovalRule | None = None,
        decided: dict[str, Any] | None = None,
    ) -> Approval:
        """Decide a pending approval; ``ApprovalDecided`` if someone else did first.

        With ``rule``, the session remembers it in the same commit; ``decided`` goes into
        the ``approval_decided`` event (see ``event_of``)."""

        def write() -> Approval:
            row = self._execute(_GET, (approval_id,)).fetchone()
            if row is None:
                raise ApprovalNotFound(approval_id)
            lock_session_of_task(self._engine, row[2])  # the task's session: the one lock order
            now = to_db_time(utcnow())
            moved = self._execute(
                _DECIDE, (status, message, now, decided_by, approval_id)
            ).fetchone()
            if moved is None:
                current = approval_from_row(self._execute(_GET, (approval_id,)).fetchone())
                raise ApprovalDecided(approval_id, current.status, current.decided_by)
            approval = approval_from_row(moved)
            self._execute(_NEXT_AWAITED, (now, approval.task_id))
            if rule is not None:
                self._remember(approval.session_id, rule, now)
            told = [event_of("approval_decided", approval, decided)]
            self._events.append_within(approval.task_id, told)
            return approval

        return self._engine.write(write)

    def expire(self, task_id: str, message: str) -> list[Approval]:
        """The task's turn is ending: what waits for a person expires now (decided by the
        system), so that no decision can win for a tool its turn will never run."""

        def write() -> list[Approval]:
            lock_session_of_task(self._engine, task_id)
            expired = self.expired_of_task(task_id, message)
            if expired:
                self._execute(_NEXT_AWAITED, (to_db_time(utcnow()), task_id))
                told = [event_of("approval_decided", a) for a in expired]
                self._events.append_within(task_id, told)
            return expired

        return self._engine.write(write)

    def expired_of_task(self, task_id: str, message: str) -> list[Approval]:
        """Inside a transaction that ends the task's turn: its pending approvals expire
        (decided by the system); the caller writes their events."""
        rows = self._execute(_EXPIRE_OF_TASK, (message, to_db_time(utcnow()), task_id))
        return [approval_from_row(row) for row in rows.fetchall()]

    def get(self, approval_id: str) -> Approval:
        row = self._engine.read(lambda: self._execute(_GET, (approval_id,)).fetchone())
        if row is None:
            raise ApprovalNotFound(approval_id)
        return approval_from_row(row)

    def owner(self, approval_id: str) -> tuple[str, str | None]:
        """The approval's session and that session's owner, in one read."""
        row = self._engine.read(lambda: self._execute(_OWNER, (approval_id,)).fetchone())
        if row is None:
            raise ApprovalNotFound(approval_id)
        return row[0], row[1]

    def pending_count(self) -> int:
        """Approvals waiting for a person now, over every session (for metrics)."""
        sql = f"SELECT COUNT(*) FROM approvals WHERE status = '{ApprovalStatus.PENDING}'"
        return self._engine.read(lambda: self._execute(sql).fetchone()[0])

    def list(self, query: ApprovalListQuery | None = None, /, **fields: Any) -> Page:
        """A page of approvals narrowed by ``query`` (or its fields as keywords)."""
        query = given(ApprovalListQuery, query, fields)
        request = paging.page_request(query.limit, query.cursor, query.order)
        conditions, params = paging.window(request)
        chosen = sorted(statuses_of(query.status, ApprovalStatus) or ())
        for condition, value in (
            ("session_id = ?", query.session_id),
            ("task_id = ?", query.task_id),
            ("session_id IN (SELECT id FROM sessions WHERE owner = ?)", query.owner),
        ):
            if value is not None:
                conditions.append(condition)
                params.append(value)
        if chosen:
            conditions.append(f"status IN ({', '.join('?' * len(chosen))})")
            params.extend(chosen)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        tail = f" FROM approvals{where} ORDER BY {paging.ordering(request.order)} LIMIT ?"

        def read() -> Page:
            # A tool's input can be large (a file to write): sizes first, as for tasks.
            sizes = self._execute(f"SELECT {_SIZE}{tail}", [*params, request.limit + 1])
            taken = min(request.limit, paging.fitting(row[0] for row in sizes.fetchall()))
            page = paging.PageRequest(taken, request.order, request.after)
            rows = self._execute(f"SELECT {_COLUMNS}{tail}", [*params, taken + 1]).fetchall()
            return paging.page_of([approval_from_row(row) for row in rows], page)

        return self._engine.read(read, snapshot=True)

    def _remember(self, session_id: str, rule: ApprovalRule, now: str) -> None:
        known = rules_from_json(self._execute(_RULES, (session_id,)).fetchone()[0])
        if any(r.allows(rule.tool_name, rule.input) for r in known):
            return
        if len(known) >= MAX_RULES:
            raise InvalidRequest(
                f"Session '{session_id}' remembers {MAX_RULES} rules already, the most it may.",
                {"field": "remember", "max_rules": MAX_RULES},
            )
        rules = [msgspec.to_builtins(r) for r in (*known, rule)]
        self._execute(_SET_RULES, (to_json_text(rules), now, session_id))
