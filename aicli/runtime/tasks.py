"""Tasks: submitting to a session's queue, reading, cancelling, and waiting for news.

The store is each session's queue: a submit and a cancel of a pending task are
written there, in one transaction each, and only then is the session's actor
told to look (straight, if it lives here; else the supervisor starts one). Waits
read the store and sleep on the notifier, never polling; a revoked principal's wait
ends at once.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import msgspec
import pykka

from aicli import access, contract, validation
from aicli.actors.event_tail import EventTails
from aicli.actors.messages import CancelRunning, Wake
from aicli.actors.notifier import Notifier, events_of
from aicli.actors.session import CANCELLED_PENDING, ActorContext, announce
from aicli.contract import (
    Event,
    EventPage,
    Page,
    Principal,
    Task,
    TaskListQuery,
    TaskStatus,
    TaskSubmit,
)
from aicli.errors import BudgetExceeded, Unavailable
from aicli.runtime.gate import Gate
from aicli.runtime.supervision import SupervisorLink
from aicli.storage import Store

CANCEL_TIMEOUT = 15.0


class Tasks:
    def __init__(
        self,
        context: ActorContext,
        link: SupervisorLink,
        gate: Gate,
        revocations: access.Revocations,
    ) -> None:
        """``context``: the store, settings and notifier the actors share (announcing needs it)."""
        self._store: Store = context.store
        self._settings = context.settings
        self._context = context
        self._notifier: Notifier = context.notifier
        self._link = link
        self._gate = gate
        self._revocations = revocations
        self._event_tails = EventTails(context.store)

    def submit(
        self,
        session_id: str,
        request: TaskSubmit | str,
        *,
        idempotency_key: str | None,
        wait: float | None,
        principal: Principal | None,
        options: dict[str, Any],
    ) -> tuple[Task, bool]:
        self._gate.check_accepting()
        if not isinstance(request, TaskSubmit):
            request = contract.convert({"command": request, **options}, TaskSubmit)
        validation.command_fits(request.command, self._settings.max_command_chars)
        access.check_session(self._store, principal, session_id)
        max_pending = self._settings.max_pending_per_session
        if principal is not None:
            max_pending = _pending_limit(principal, max_pending)
        # Watched before it exists, so that a turn quicker than this call is not missed.
        task_id = contract.new_id()
        seen = self._notifier.version(task_id)
        task, created = self._store.create_task(
            session_id,
            request,
            idempotency_key=idempotency_key,
            max_pending=max_pending,
            task_id=task_id,
        )
        if not created:
            found = self._wait(task.id, wait, principal) if wait else self.get(task.id)
            return found, False
        announce(self._context, task, command_chars=len(task.command))
        # The task is accepted now; a server stopping meanwhile runs it at its next start.
        with contextlib.suppress(Unavailable, pykka.ActorDeadError):
            self._link.tell(Wake(session_id))
        if wait:
            return self._wait(task_id, wait, principal, known=(seen, task)), True
        return task, True

    def get(self, task_id: str, principal: Principal | None = None) -> Task:
        access.check_task(self._store, principal, task_id)
        return self._with_queue_positions([self._store.get_task(task_id)])[0]

    def page(self, query: TaskListQuery, principal: Principal | None) -> Page:
        """The page, narrowed to what ``principal`` may see.

        The session filter's access is checked only when the page is empty: a row
        proves the session exists and, under a user's owner filter, that it is the
        user's; an unknown and a foreign session both give an empty page, then the
        check's ``SessionNotFound``.
        """
        page = self._store.list_tasks(access.narrowed(principal, query))
        if not page.data and query.session_id is not None:
            access.check_filter_session(self._store, principal, query.session_id)
        return msgspec.structs.replace(page, data=self._with_queue_positions(page.data))

    def cancel(self, task_id: str, principal: Principal | None) -> Task:
        access.check_task(self._store, principal, task_id)
        task = self._store.get_task(task_id)
        if task.is_terminal:
            return task
        cancelled = self._store.cancel_pending(task_id, CANCELLED_PENDING)
        if cancelled is not None:
            announce(self._context, cancelled)
            return cancelled
        self._link.tell(CancelRunning(task.session_id, task_id))
        task = self.wait(task_id, timeout=CANCEL_TIMEOUT)
        if not task.is_terminal:
            raise Unavailable(
                f"Task '{task_id}' did not stop within {CANCEL_TIMEOUT:g} s; try again.", 5
            )
        return task

    def wait(self, task_id: str, timeout: float, principal: Principal | None = None) -> Task:
        access.check_task(self._store, principal, task_id)
        return self._wait(task_id, timeout, principal)

    def _wait(
        self,
        task_id: str,
        timeout: float,
        principal: Principal | None = None,
        known: tuple[int, Task] | None = None,
    ) -> Task:
        """``wait``; ``known`` is the task as read after its key's version was, saving a read."""
        deadline = time.monotonic() + timeout
        while True:
            self._revocations.check(principal)
            if known is None:
                seen = self._notifier.version(task_id)
                task = self.get(task_id)
            else:
                (seen, task), known = known, None
            remaining = deadline - time.monotonic()
            if task.is_terminal or remaining <= 0 or self._notifier.closed:
                return task
            self._notifier.wait(task_id, seen, remaining)

    def events(
        self, task_id: str, after: int, limit: int | None, principal: Principal | None
    ) -> list[Event]:
        access.check_task(self._store, principal, task_id)
        self._revocations.check(principal)
        return self._store.list_events(task_id, after=after, limit=limit)

    def event_page(
        self, task_id: str, after: int, limit: int, principal: Principal | None
    ) -> EventPage:
        access.check_task(self._store, principal, task_id)
        self._revocations.check(principal)
        events, more = self._store.event_page(task_id, after=after, limit=limit)
        return EventPage(data=events, has_more=more)

    def ended(self, task_id: str) -> bool:
        return self._store.task_ended(task_id)

    def check(self, task_id: str, principal: Principal | None) -> None:
        access.check_task(self._store, principal, task_id)

    def wait_for_events(
        self,
        task_id: str,
        after: int,
        timeout: float,
        limit: int | None,
        principal: Principal | None,
    ) -> list[Event]:
        """Read through the task's tail: however many wait, a new event is read once."""
        deadline = time.monotonic() + timeout
        key = events_of(task_id)
        while True:
            self._revocations.check(principal)
            seen = self._notifier.version(key)
            events = self._event_tails.after(task_id, after, limit, seen)
            remaining = deadline - time.monotonic()
            if events or remaining <= 0 or self._notifier.closed:
                return events
            self._notifier.wait(key, seen, remaining)

    def _with_queue_positions(self, tasks: list[Task]) -> list[Task]:
        """A pending task's place in its session's queue, which only the store's order knows."""
        sessions = {t.session_id for t in tasks if t.status == TaskStatus.PENDING}
        if not sessions:
            return tasks
        positions: dict[str, int] = {}
        for session_id in sessions:
            for index, task_id in enumerate(self._store.pending_task_ids(session_id)):
                positions[task_id] = index
        return [
            msgspec.structs.replace(t, queue_position=positions.get(t.id))
            if t.status == TaskStatus.PENDING
            else t
            for t in tasks
        ]


def _pending_limit(principal: Principal, limit: int) -> int:
    """The pending limit for this principal's sessions; ``BudgetExceeded`` once it spent all."""
    budget = principal.limits.budget_usd
    if budget is not None and principal.total_cost_usd >= budget:
        raise BudgetExceeded(
            f"Principal '{principal.name}' has spent its budget of ${budget:g} "
            f"(${principal.total_cost_usd:.4f} so far); no new task is taken.",
            {"budget_usd": budget, "total_cost_usd": principal.total_cost_usd},
        )
    own = principal.limits.max_pending_per_session
    return limit if own is None else min(limit, own)
