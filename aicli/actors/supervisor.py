"""The supervisor: opens sessions, routes news to their actors, and rations Claude processes.

It owns the session actors, starting one whenever a session's queue in the
store holds work and no actor of that session lives: on ``Wake`` after a
submit, after a restart, and when an actor stopped while a task reached its
queue (so no accepted task is ever stranded). It also holds the limits that
span sessions: how many sessions may be open and how many Claude processes
may live at once. Process slots are
granted by message: a session asks for one with ``SlotRequested``; when all
are taken the least recently idle holder is told to ``Evict``, and if every
holder is busy the request waits in line for the next ``SlotReleased``. The
supervisor never asks a session actor anything, so no two actors can wait on
each other; only ``stop_sessions``, at the very end, waits for them to stop.

It never calls the store either (an import contract holds it to that): what it
decides on comes in its messages, read by whoever sends them on their own thread
(a session actor reads its session when it starts, and says in ``SessionStopped``
whether work is left; the link reads what a ``Rescan`` finds). So one slow query
holds up that caller, never every session's slot grants.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from typing import Any

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from aicli.actors.messages import (
    Advance,
    Cancel,
    CancelRunning,
    Close,
    CloseSession,
    Decided,
    Drain,
    Evict,
    EvictRefused,
    Fence,
    ProcessBusy,
    ProcessIdle,
    Rescan,
    SessionStopped,
    Shutdown,
    SlotGranted,
    SlotReleased,
    SlotRequested,
    Wake,
)
from aicli.actors.session import RETRY_S, ActorContext, SessionActor

log = logging.getLogger(__name__)


class Supervisor(pykka.ThreadingActor):
    def __init__(
        self, context: ActorContext, sessions: dict[str, pykka.ActorRef[SessionActor]]
    ) -> None:
        """``sessions``: the live session actors by session id, kept here; others only read
        it (the link, to pass on a peer's news only where it may matter)."""
        super().__init__()
        self.ctx = context
        self.sessions = sessions
        self.holders: dict[str, float | None] = {}  # session -> idle since (None: busy)
        self.waiting: deque[str] = deque()
        self.evicting: set[str] = set()
        self.draining = False

    # Asks from the runtime

    def recover(self, found: Rescan) -> None:
        """Start the queues no node runs (the link found them, after taking over the
        sessions of dead nodes)."""
        self._rescan(found)

    def drain_sessions(self) -> int:
        """The server is stopping: running tasks may finish, nothing new starts; how many told.

        From here on no session actor is started, whatever wakes one: pending
        tasks wait in the store for the next start.
        """
        self.draining = True
        self.waiting.clear()
        for ref in self.sessions.values():
            ref.tell(Drain())
        return len(self.sessions)

    def shutdown_sessions(self) -> int:
        """Tell every session to interrupt its running task; returns how many were told."""
        self.draining = True
        self.waiting.clear()
        for ref in self.sessions.values():
            ref.tell(Shutdown())
        return len(self.sessions)

    def stop_sessions(self, timeout: float) -> None:
        """Stop the session actors, newest first: the reverse of the order they started in.

        This one call waits on the actors (up to ``timeout`` each): it is the end.
        """
        self.draining = True
        for session_id in reversed(list(self.sessions)):
            ref = self.sessions.pop(session_id)
            try:
                ref.stop(timeout=timeout)
            except pykka.Timeout:
                log.warning("session %s did not stop within %.1fs", session_id, timeout)

    # Tells from session actors

    def on_receive(self, message: Any) -> None:
        try:
            self._handle(message)
        except Exception:
            log.exception("supervisor: failed to handle %r", message)
            session_id = getattr(message, "session_id", None)
            if isinstance(message, Wake | SessionStopped) and session_id is not None:
                self.ctx.scheduler.tell_later(RETRY_S, self.actor_ref, Wake(session_id))

    def _handle(self, message: Any) -> None:
        if isinstance(message, Wake):
            if not message.from_peer:
                self._wake(message.session_id)
            elif not self._tell(message.session_id, Advance()):
                # Only the holder may run it; the new actor reads whether that is this node.
                self._wake(message.session_id, held_only=True)
        elif isinstance(message, Rescan):
            self._rescan(message)
        elif isinstance(message, Fence):
            self._fence()
        elif isinstance(message, CancelRunning):
            self._tell(message.session_id, Cancel(message.task_id))
        elif isinstance(message, CloseSession):
            if not self._tell(message.session_id, Close()):
                # No actor here to remove its directories: one starts, sees it closed, and
                # removes them (no process runs) on its own thread.
                self.sessions[message.session_id] = self._start(message.session_id)
        elif isinstance(message, Decided):
            self._tell(message.session_id, message.answer)
        elif isinstance(message, SlotRequested):
            self._request(message.session_id)
        elif isinstance(message, SlotReleased):
            self._release(message.session_id)
        elif isinstance(message, ProcessIdle):
            if message.session_id in self.holders:
                self.holders[message.session_id] = message.since
                self._serve_waiting()
        elif isinstance(message, ProcessBusy):
            if message.session_id in self.holders:
                self.holders[message.session_id] = None
        elif isinstance(message, EvictRefused):
            self.evicting.discard(message.session_id)
            if message.session_id in self.holders:
                self.holders[message.session_id] = None
            self._serve_waiting()
        elif isinstance(message, SessionStopped):
            ref = self.sessions.get(message.session_id)
            if ref is None or ref.actor_urn != message.actor_urn:
                return  # a newer actor of the session holds whatever is recorded now
            del self.sessions[message.session_id]
            self._release(message.session_id)
            if message.session_id in self.waiting:
                self.waiting.remove(message.session_id)
            if message.pending and not message.handed_off:
                self._wake(message.session_id)  # a task came in while it was stopping
        else:
            log.warning("supervisor: unexpected message %r", message)

    def _request(self, session_id: str) -> None:
        if session_id in self.holders:
            self._grant(session_id)
        elif session_id not in self.waiting:
            self.waiting.append(session_id)
            self._serve_waiting()

    def _release(self, session_id: str) -> None:
        self.evicting.discard(session_id)
        if self.holders.pop(session_id, "absent") != "absent":
            self._serve_waiting()

    def _serve_waiting(self) -> None:
        """Grant free slots in order of request; make room by evicting idle holders."""
        limit = self.ctx.settings.max_live_processes
        while self.waiting and len(self.holders) < limit:
            self._grant(self.waiting.popleft())
        if not self.waiting:
            return
        idle = sorted(
            (since, sid)
            for sid, since in self.holders.items()
            if since is not None and sid not in self.evicting
        )
        for _, session_id in idle[: len(self.waiting) - len(self.evicting)]:
            self.evicting.add(session_id)
            self._tell(session_id, Evict())

    def _grant(self, session_id: str) -> None:
        self.holders[session_id] = None
        if not self._tell(session_id, SlotGranted()):
            self.holders.pop(session_id, None)

    def _tell(self, session_id: str, message: object) -> bool:
        ref = self.sessions.get(session_id)
        if ref is None:
            return False
        try:
            ref.tell(message)
        except pykka.ActorDeadError:
            return False
        return True

    def _wake(self, session_id: str, *, held_only: bool = False) -> None:
        """Tell the session's actor to look at its queue, starting one if none lives here.

        A new actor reads its session and stops at once if it does not run here (closed,
        or another live node runs it; ``held_only``: unless this node holds it).
        """
        if self.draining:
            return
        ref = self.sessions.get(session_id)
        if ref is not None and ref.is_alive():
            with contextlib.suppress(pykka.ActorDeadError):  # it stopped: SessionStopped follows
                ref.tell(Advance())
            return
        if self.ctx.lease.node is None:
            return  # joining again: the first rescan after the join looks again
        self.sessions[session_id] = self._start(session_id, held_only=held_only)

    def _start(self, session_id: str, *, held_only: bool = False) -> pykka.ActorRef[SessionActor]:
        return SessionActor.start(session_id, self.ctx, self.actor_ref, held_only=held_only)

    def _rescan(self, found: Rescan) -> None:
        """Start the queues that no node runs (or this node holds), and end the turns of
        sessions closed on a peer: a wake may have been lost, or a node died."""
        for session_id in found.unclaimed:
            if session_id not in self.sessions:
                self._wake(session_id)
        for session_id in found.held:
            self._wake(session_id)
        for session_id in found.closed:
            self._tell(session_id, Close())

    def _fence(self) -> None:
        """The lease is lost: every session actor ends its process and stops, writing nothing.

        New actors start only once the node has joined again (``_wake`` needs a lease).
        """
        for session_id in list(self.sessions):
            self._tell(session_id, Fence())
        self.waiting.clear()


class SupervisorProxy(ActorMemberMixin, pykka.ActorProxy[Supervisor]):
    """The supervisor's asks, typed: each returns a ``Future`` of what the method returns.

    Only a type (Mopidy's ``CoreProxy`` way): ``cast`` a ``Supervisor`` proxy to it,
    never instantiate it, so that a checker knows each ask's arguments and result.
    (A misspelt name still passes: ``ActorProxy.__getattr__`` answers any.) The
    session actors need none: they are only ever told.
    """

    recover = proxy_method(Supervisor.recover)
    drain_sessions = proxy_method(Supervisor.drain_sessions)
    shutdown_sessions = proxy_method(Supervisor.shutdown_sessions)
    stop_sessions = proxy_method(Supervisor.stop_sessions)
