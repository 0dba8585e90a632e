"""Sessions: opening one (its actor starts with its first task), reading, closing.

A close is written in the store first (its pending tasks cancelled in the same
commit); only then are the session's actors, here or on a peer, told to
interrupt what runs. ``process_alive`` is read from the store, not from this
node's actors, so that every node answers alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import pykka

from aicli import access, contract, policy, validation
from aicli.actors.messages import CloseSession
from aicli.actors.notifier import Notifier, events_of
from aicli.actors.session import SESSION_CLOSED_PENDING
from aicli.contract import Page, Principal, Session, SessionCreate, SessionListQuery
from aicli.errors import Unavailable
from aicli.runtime.gate import Gate
from aicli.runtime.supervision import SupervisorLink
from aicli.runtime.tasks import Tasks
from aicli.settings import Settings
from aicli.storage import Store

# What a session's close may take: its running task's cancel grace, and a margin.
CLOSE_MARGIN_S = 10

# ``Sessions.after_close``, for those that close sessions in the store themselves.
AfterClose = Callable[[Sequence[tuple[str, list[str], str | None]]], list[str]]


class Sessions:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        notifier: Notifier,
        link: SupervisorLink,
        gate: Gate,
        tasks: Tasks,
    ) -> None:
        self._store = store
        self._settings = settings
        self._notifier = notifier
        self._link = link
        self._gate = gate
        self._tasks = tasks

    def open(
        self, request: SessionCreate | None, principal: Principal | None, fields: dict[str, Any]
    ) -> Session:
        self._gate.check_accepting()
        if request is None:
            request = contract.convert(fields, SessionCreate)
        clean = validation.session_fields(request, self._settings.workspace_root)
        if principal is not None:
            own_root = principal.workspace_root
            if own_root:
                validation.session_fields(request, own_root)
            clean["max_owned"] = principal.limits.max_sessions
        clean["tools"] = policy.admit(principal, clean)
        clean["owner"] = access.owner_of_new(principal)
        self._link.proxy()  # refused once the runtime stops, like every call that opens
        # Counted by the store within ``max_sessions``, in the insert's transaction, so peers'
        # opens count too; its actor starts with its first task.
        opened = self._store.create_session(**clean, max_open=self._settings.max_sessions)
        return self._with_process_state(opened)

    def get(self, session_id: str, principal: Principal | None) -> Session:
        access.check_session(self._store, principal, session_id)
        return self._with_process_state(self._store.get_session(session_id))

    def page(self, query: SessionListQuery, principal: Principal | None) -> Page:
        page = self._store.list_sessions(access.narrowed(principal, query))
        return msgspec.structs.replace(page, data=self._with_process_states(page.data))

    def close(self, session_id: str, principal: Principal | None) -> Session:
        access.check_session(self._store, principal, session_id)
        closed = self._store.close_session(session_id, SESSION_CLOSED_PENDING)
        for running in self.after_close([(session_id, *closed)]):
            self._tasks.wait(running, timeout=self._settings.cancel_grace + CLOSE_MARGIN_S)
        return self._with_process_state(self._store.get_session(session_id))

    def after_close(self, closed: Sequence[tuple[str, list[str], str | None]]) -> list[str]:
        """Announce what closing sessions (``(id, cancelled, running)``) cancelled, and have
        their actors (here or on a peer) interrupt what runs; the running tasks' ids."""
        for session_id, cancelled, _ in closed:
            for task_id in cancelled:
                self._notifier.announce(events_of(task_id))
                self._notifier.announce(task_id)
                self._notifier.forget(task_id, events_of(task_id))
            with contextlib.suppress(Unavailable, pykka.ActorDeadError):
                self._link.tell(CloseSession(session_id))
        return [running for _, _, running in closed if running is not None]

    def _with_process_state(self, session: Session) -> Session:
        [shown] = self._with_process_states([session])
        return shown

    def _with_process_states(self, sessions: list[Session]) -> list[Session]:
        """``process_alive`` as the store records it, so that every node answers alike."""
        alive = self._store.ownership.with_live_process([s.id for s in sessions])
        return [msgspec.structs.replace(s, process_alive=s.id in alive) for s in sessions]
