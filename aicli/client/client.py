"""``Client``: the runtime's methods, over the public HTTP API.

A program written against an embedded ``Runtime`` moves to a remote service by
swapping the object: the same method names, the same return types (the
``aicli.contract`` structs) and the same exception classes for the API's error
codes. Where HTTP adds something the runtime has no need of, the client takes
care of it: long waits are cut into the API's 60-second long-polls, submits
carry an ``Idempotency-Key`` so a retried one never makes a second task, lists
can be walked page after page, and a task's live events resume after a dropped
connection from the last one seen, so none is lost or repeated.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec

from aicli.client.follow import EventStream
from aicli.client.wire import Wire
from aicli.contract import (
    Approval,
    ApprovalDecision,
    ApprovalListQuery,
    Event,
    EventPage,
    Node,
    NodeList,
    Page,
    Principal,
    PrincipalCreate,
    PrincipalListQuery,
    Session,
    SessionCreate,
    SessionListQuery,
    Task,
    TaskListQuery,
)
from aicli.contract.queries import given
from aicli.errors import (
    ApprovalNotFound,
    PrincipalNotFound,
    TaskNotCancellable,
)

# The API holds a long-poll at most this long (``?wait=``, ``Prefer: wait=``).
MAX_WAIT_S = 60.0
# Cancelling a running task and closing a session answer once the turn has stopped.
STOPPING_S = 30.0
PAGE_SIZE = 200


def _query(**fields: Any) -> dict[str, str]:
    """Filters as the API spells them: lists comma-joined, times RFC 3339, None left out."""
    query: dict[str, str] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if isinstance(value, datetime):
            # RFC 3339 needs an offset; a naive time is taken to be UTC, as the API's are.
            aware = value if value.tzinfo else value.replace(tzinfo=UTC)
            value = aware.isoformat()
        elif isinstance(value, list | tuple | set | frozenset):
            value = ",".join(str(item) for item in value)
        query[name] = str(value)
    return query


class Client:
    """A connection pool to one aicli service; safe to share between threads.

    ``timeout`` bounds each request (a long-poll gets its wait on top);
    ``retries`` is how many times a call that may be repeated is sent again
    (see ``aicli.client.retries``). ``transport`` is httpx's: a proxy, a Unix
    socket, or an app in the same process.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._wire = Wire(base_url, token, timeout=timeout, retries=retries, transport=transport)
        self.base_url = self._wire.base_url
        self._timeout = timeout

    def close(self) -> None:
        self._wire.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    # Principals

    def me(self) -> Principal:
        return self._wire.call("GET", "/me", kind=Principal)

    def create_principal(
        self, request: PrincipalCreate | None = None, /, **fields: Any
    ) -> Principal:
        """A new principal and its ``token``, shown only in this answer (admins only)."""
        body = request if request is not None else fields
        return self._wire.call("POST", "/principals", kind=Principal, body=body, safe=False)

    def list_principals(
        self, query: PrincipalListQuery | None = None, /, **filters: Any
    ) -> Page[Principal]:
        """A page of principals (admins only): ``query``, or its fields as keywords."""
        return self._list("/principals", Page[Principal], given(PrincipalListQuery, query, filters))

    def get_principal(self, principal_id: str) -> Principal:
        path = f"/principals/{principal_id}"
        return self._wire.call("GET", path, kind=Principal, not_found=PrincipalNotFound)

    def revoke_principal(self, principal_id: str) -> Principal:
        """Its token stops working at the next request (admins only)."""
        path = f"/principals/{principal_id}"
        return self._wire.call("DELETE", path, kind=Principal, not_found=PrincipalNotFound)

    # Sessions

    def open_session(self, request: SessionCreate | None = None, /, **fields: Any) -> Session:
        """Open a session from a ``SessionCreate`` or its fields as keyword arguments."""
        body = request if request is not None else fields
        return self._wire.call("POST", "/sessions", kind=Session, body=body, safe=False)

    def get_session(self, session_id: str) -> Session:
        return self._wire.call("GET", f"/sessions/{session_id}", kind=Session)

    def list_sessions(
        self, query: SessionListQuery | None = None, /, **filters: Any
    ) -> Page[Session]:
        """A page of sessions: ``query``, or its fields as keywords (a list for ``status``)."""
        return self._list("/sessions", Page[Session], given(SessionListQuery, query, filters))

    def iter_sessions(self, **filters: Any) -> Iterator[Session]:
        """Every session ``list_sessions`` would list with ``filters``, a page at a time."""
        return self._walk(self.list_sessions, **filters)

    def close_session(self, session_id: str) -> Session:
        """Close: pending tasks are cancelled, a running one is interrupted; answers once done."""
        path = f"/sessions/{session_id}"
        return self._wire.call("DELETE", path, kind=Session, timeout=self._timeout + STOPPING_S)

    # Tasks

    def submit(
        self,
        session_id: str,
        command: str,
        *,
        wait: float | None = None,
        timeout_s: float | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Task:
        """Accept a task; with ``wait``, return it once terminal or after ``wait`` seconds.

        Every submit carries an ``Idempotency-Key`` (``idempotency_key``, or a new
        one), so that retrying it after a lost answer returns the first task.
        """
        body: dict[str, Any] = {"command": command}
        if timeout_s is not None:
            body["timeout_s"] = timeout_s
        if metadata is not None:
            body["metadata"] = dict(metadata)
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        deadline = time.monotonic() + (wait or 0)
        # The API reads whole seconds; a fraction left over is waited for by ``wait``.
        held = int(max(0, min(wait or 0, MAX_WAIT_S)))
        if held:
            headers["Prefer"] = f"wait={held}"
        task = self._wire.call(
            "POST",
            f"/sessions/{session_id}/tasks",
            kind=Task,
            body=body,
            headers=headers,
            timeout=self._timeout + held,
        )
        remaining = deadline - time.monotonic()
        if task.is_terminal or remaining <= 0:
            return task
        return self.wait(task.id, remaining)

    def get_task(self, task_id: str) -> Task:
        return self._wire.call("GET", f"/tasks/{task_id}", kind=Task)

    def wait(self, task_id: str, timeout: float) -> Task:
        """The task once it is terminal, or as it is when ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        while True:
            held = max(0.0, min(deadline - time.monotonic(), MAX_WAIT_S))
            task = self._wire.call(
                "GET",
                f"/tasks/{task_id}",
                kind=Task,
                params={"wait": f"{held:.3f}"},
                timeout=self._timeout + held,
            )
            if task.is_terminal or time.monotonic() >= deadline:
                return task

    def list_tasks(self, query: TaskListQuery | None = None, /, **filters: Any) -> Page[Task]:
        """A page of tasks: ``query``, or its fields as keywords (a list for ``status``, a
        ``datetime`` for a time)."""
        return self._list("/tasks", Page[Task], given(TaskListQuery, query, filters))

    def iter_tasks(self, **filters: Any) -> Iterator[Task]:
        """Every task ``list_tasks`` would list with ``filters``, a page at a time."""
        return self._walk(self.list_tasks, **filters)

    def cancel(self, task_id: str) -> Task:
        """Cancel a pending or running task; returns it once it has ended.

        As with the runtime, a task that had already ended is returned as it is:
        only ``status == "cancelled"`` means the cancel took effect.
        """
        try:
            path = f"/tasks/{task_id}"
            return self._wire.call("DELETE", path, kind=Task, timeout=self._timeout + STOPPING_S)
        except TaskNotCancellable:
            return self.get_task(task_id)

    def event_log(self, task_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        """One page of the task's events with ``seq > after`` (the JSON form)."""
        query = _query(after=after, limit=limit)
        page = self._wire.call("GET", f"/tasks/{task_id}/events", kind=EventPage, params=query)
        return page.data

    def events(self, task_id: str, after: int = 0) -> EventStream:
        """The task's events after ``after``, live, until its terminal status event.

        Where the runtime hands out a page (``event_log`` here), a client far from
        the server wants them as they happen: each comes once, in order, across
        dropped connections (see ``aicli.client.follow``). Close the stream, or
        use it in ``with``, to let go of its connection before the task ends.
        """
        return EventStream(self, self._wire, task_id, after)

    # Approvals

    def approvals(
        self, query: ApprovalListQuery | None = None, /, **filters: Any
    ) -> Page[Approval]:
        """A page of approvals the caller may see, newest first by default: ``query``, or its
        fields as keywords."""
        return self._list("/approvals", Page[Approval], given(ApprovalListQuery, query, filters))

    def iter_approvals(self, **filters: Any) -> Iterator[Approval]:
        """Every approval ``approvals`` would list with ``filters``, a page at a time."""
        return self._walk(self.approvals, **filters)

    def get_approval(self, approval_id: str) -> Approval:
        path = f"/approvals/{approval_id}"
        return self._wire.call("GET", path, kind=Approval, not_found=ApprovalNotFound)

    def decide(self, approval_id: str, decision: ApprovalDecision | str, **fields: Any) -> Approval:
        """Allow or deny a pending approval: an ``ApprovalDecision``, or its ``decision``
        (``"allow"``, ``"deny"``) with the other fields as keywords."""
        body: Any = decision
        if not isinstance(decision, ApprovalDecision):
            body = {"decision": decision, **fields}
        return self._wire.call(
            "POST",
            f"/approvals/{approval_id}",
            kind=Approval,
            body=body,
            safe=False,
            not_found=ApprovalNotFound,
        )

    # Nodes

    def nodes(self) -> list[Node]:
        """The servers sharing the service's database (admins only)."""
        return self._wire.call("GET", "/nodes", kind=NodeList).data

    # The wire

    def _list(self, path: str, kind: Any, query: msgspec.Struct) -> Any:
        """One page of a list: every field of its query is a parameter of the same name."""
        params = _query(**msgspec.structs.asdict(query))
        return self._wire.call("GET", path, kind=kind, params=params)

    def _walk(self, list_page: Any, **filters: Any) -> Iterator[Any]:
        cursor = None
        while True:
            page = list_page(limit=PAGE_SIZE, cursor=cursor, **filters)
            yield from page.data
            if not page.has_more:
                return
            cursor = page.next_cursor
