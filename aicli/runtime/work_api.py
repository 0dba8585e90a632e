"""The work half of the façade: what callers do with sessions, tasks and approvals.

Each method hands its call to its noun's controller; the signatures and the
documentation of the embedding API live here, the doing in the controllers.
"""

from __future__ import annotations

from typing import Any

from aicli import contract
from aicli.approval_desk import ApprovalDesk
from aicli.contract import (
    Approval,
    ApprovalDecision,
    ApprovalListQuery,
    Event,
    EventPage,
    Page,
    Principal,
    Session,
    SessionCreate,
    SessionListQuery,
    Task,
    TaskListQuery,
    TaskSubmit,
)
from aicli.contract.queries import given
from aicli.runtime.sessions import Sessions
from aicli.runtime.tasks import Tasks


class WorkApi:
    _sessions: Sessions
    _tasks: Tasks
    _desk: ApprovalDesk  # the approvals' controller (peers use it too, so it lives beside them)

    # Sessions

    def open_session(
        self,
        request: SessionCreate | None = None,
        /,
        *,
        principal: Principal | None = None,
        **fields: Any,
    ) -> Session:
        """Open a session from a ``SessionCreate`` or its fields as keyword arguments.

        Either way the body is checked here, once, so an embedder gets the errors
        an HTTP client gets; the workdir must exist (inside the workspace root,
        and inside the principal's own root if it has one). The session is the
        principal's, within its ``max_sessions`` and its ``policy`` (``aicli.policy``).
        """
        return self._sessions.open(request, principal, fields)

    def get_session(self, session_id: str, *, principal: Principal | None = None) -> Session:
        return self._sessions.get(session_id, principal)

    def list_sessions(
        self,
        query: SessionListQuery | None = None,
        /,
        *,
        principal: Principal | None = None,
        **filters: Any,
    ) -> Page:
        """A page of the sessions the caller may see: ``query``, or its fields as keywords."""
        return self._sessions.page(given(SessionListQuery, query, filters), principal)

    def close_session(self, session_id: str, *, principal: Principal | None = None) -> Session:
        """Close: its pending tasks are cancelled at once, a running one is interrupted."""
        return self._sessions.close(session_id, principal)

    # Tasks

    def submit_task(
        self,
        session_id: str,
        request: TaskSubmit | str,
        *,
        idempotency_key: str | None = None,
        wait: float | None = None,
        principal: Principal | None = None,
        **options: Any,
    ) -> tuple[Task, bool]:
        """Accept a task: a ``TaskSubmit``, or its command with the other fields as keywords.

        The bool is False when ``idempotency_key`` matched an earlier task. The
        task is in the session's queue once this returns (committed, so it
        survives a crash); the session's actor is told to look at the queue.
        With ``wait``, the task is returned once terminal or after ``wait``
        seconds, whichever is first: one call from prompt to answer. A principal's
        submits stop at its ``budget_usd`` (``BudgetExceeded``) and its
        ``max_pending_per_session``, and the session owner's at its ``max_stored_bytes``
        (``StorageLimitExceeded``, checked in the store's write).
        """
        return self._tasks.submit(
            session_id,
            request,
            idempotency_key=idempotency_key,
            wait=wait,
            principal=principal,
            options=options,
        )

    def submit(
        self, session_id: str, command: str, *, wait: float | None = None, **options: Any
    ) -> Task:
        return self.submit_task(session_id, command, wait=wait, **options)[0]

    def get_task(self, task_id: str, *, principal: Principal | None = None) -> Task:
        return self._tasks.get(task_id, principal)

    def list_tasks(
        self,
        query: TaskListQuery | None = None,
        /,
        *,
        principal: Principal | None = None,
        **filters: Any,
    ) -> Page:
        """A page of the tasks the caller may see: ``query``, or its fields as keywords."""
        return self._tasks.page(given(TaskListQuery, query, filters), principal)

    def cancel(self, task_id: str, *, principal: Principal | None = None) -> Task:
        """Cancel a pending or running task; returns it once it has ended.

        A task that had already ended is returned as it is, so check ``status``:
        only ``cancelled`` means the cancel took effect (HTTP answers 409 otherwise).
        """
        return self._tasks.cancel(task_id, principal)

    def wait(self, task_id: str, timeout: float, *, principal: Principal | None = None) -> Task:
        """The task once it is terminal, or as it is when ``timeout`` seconds have passed;
        ``Unauthorized`` as soon as ``principal`` is revoked."""
        return self._tasks.wait(task_id, timeout, principal)

    def events(
        self,
        task_id: str,
        after: int = 0,
        limit: int | None = None,
        *,
        principal: Principal | None = None,
    ) -> list[Event]:
        """Events with ``seq > after``, at most ``limit``: a long log is read a page at a time.

        ``TaskNotFound`` for an unknown task: the store looks when no event comes back.
        """
        return self._tasks.events(task_id, after, limit, principal)

    def event_page(
        self,
        task_id: str,
        after: int = 0,
        limit: int = 1000,
        *,
        principal: Principal | None = None,
    ) -> EventPage:
        """Events with ``seq > after``: at most ``limit``, and fewer once their data passes
        ``paging.PAGE_BYTES`` (``has_more`` says whether more follow)."""
        return self._tasks.event_page(task_id, after, limit, principal)

    def task_ended(self, task_id: str) -> bool:
        """Whether the task has ended (for a caller that checked it may see it)."""
        return self._tasks.ended(task_id)

    def check_task(self, task_id: str, *, principal: Principal | None = None) -> None:
        """``TaskNotFound`` unless ``principal`` may see the task (for everyone who sees all,
        the task's reads tell an unknown one)."""
        self._tasks.check(task_id, principal)

    def wait_for_events(
        self,
        task_id: str,
        after: int,
        timeout: float,
        limit: int | None = None,
        *,
        principal: Principal | None = None,
    ) -> list[Event]:
        """Events with ``seq > after`` (at most ``limit``), waiting up to ``timeout`` for one;
        ``Unauthorized`` as soon as ``principal`` (whose stream waits) is revoked."""
        return self._tasks.wait_for_events(task_id, after, timeout, limit, principal)

    # Approvals

    def approvals(
        self,
        query: ApprovalListQuery | None = None,
        /,
        *,
        principal: Principal | None = None,
        **filters: Any,
    ) -> Page:
        """A page of approvals the caller may see, newest first by default: ``query``, or its
        fields as keywords."""
        return self._desk.list(given(ApprovalListQuery, query, filters), principal)

    def get_approval(self, approval_id: str, *, principal: Principal | None = None) -> Approval:
        return self._desk.get(approval_id, principal=principal)

    def decide(
        self,
        approval_id: str,
        decision: ApprovalDecision | str,
        *,
        principal: Principal | None = None,
        **fields: Any,
    ) -> Approval:
        """Allow or deny a pending approval: an ``ApprovalDecision``, or its ``decision``
        (``"allow"``, ``"deny"``) with the other fields as keywords."""
        if not isinstance(decision, ApprovalDecision):
            decision = contract.convert({"decision": decision, **fields}, ApprovalDecision)
        return self._desk.decide(approval_id, decision, principal=principal)
