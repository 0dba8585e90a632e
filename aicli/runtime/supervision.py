"""The one way the runtime reaches its supervisor: tells, asks, and the supervisor's life.

Callers never wait on an actor except through ``ask``, which always has a
timeout and says, when it runs out, that the outcome is unknown. A tell for a
session goes to this node's supervisor and to the peers' (the session may run on
one of them); news that came from a peer, the lease or the fence stays here.

The supervisor does no I/O, so what it needs from the store is read here, on the
caller's thread: what a rescan finds (on a thread of its own, as the lease's and
the peers' threads ask for one), and whether a peer's news of a session with no
actor here concerns this node at all.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, cast

import pykka

from aicli.actors.messages import Advance, Rescan, Wake
from aicli.actors.session import ActorContext, SessionActor
from aicli.actors.supervisor import Supervisor, SupervisorProxy
from aicli.errors import Unavailable
from aicli.peers import Peers
from aicli.runtime.gate import Gate
from aicli.storage.ownership import RESCUE_BATCH

log = logging.getLogger(__name__)

ASK_TIMEOUT = 10.0
RECOVER_TIMEOUT = 60.0


def ask(future: pykka.Future[Any]) -> Any:
    """The future's value, or ``Unavailable`` after ``ASK_TIMEOUT`` s."""
    try:
        return future.get(timeout=ASK_TIMEOUT)
    except pykka.Timeout:
        raise Unavailable(
            f"An actor did not answer within {ASK_TIMEOUT:g} s, so the outcome is unknown: "
            "the request may still take effect. Retry with an Idempotency-Key where the "
            "route takes one, so that a retry cannot act twice.",
            1,
        ) from None


class SupervisorLink:
    def __init__(self, context: ActorContext, peers: Peers, gate: Gate) -> None:
        self._context = context
        self._peers = peers
        self._gate = gate
        self._supervisor: pykka.ActorRef[Supervisor] | None = None
        # Built once with the supervisor: a pykka proxy costs ~0.3 ms to build.
        self._proxy: SupervisorProxy | None = None
        # The supervisor's live session actors: it writes, this only reads.
        self._sessions: dict[str, pykka.ActorRef[SessionActor]] = {}
        self._scan_lock = threading.Lock()
        self._scanning = self._scan_again = False

    def start(self) -> None:
        """Start the supervisor; take over what stopped nodes left, and have it start
        the queues no node runs."""
        self._supervisor = Supervisor.start(self._context, self._sessions)
        self._proxy = cast(SupervisorProxy, self._supervisor.proxy())
        self._proxy.recover(self._scan()).get(timeout=RECOVER_TIMEOUT)

    def stop(self) -> None:
        """Stop the session actors (each ends its process tree), then the supervisor."""
        if self._proxy is None:
            return
        try:
            self._proxy.stop_sessions(timeout=10).get(timeout=120)
            self._proxy.actor_ref.stop(timeout=10)
        except pykka.Timeout:
            log.warning("the actors did not stop in time; ending their processes anyway")

    @property
    def started(self) -> SupervisorProxy | None:
        """The supervisor, if it was ever started (a shutdown asks it even while stopping)."""
        return self._proxy

    def proxy(self) -> SupervisorProxy:
        """The supervisor to ask; ``Unavailable`` once the runtime stops."""
        if self._proxy is None or self._gate.stopped:
            raise Unavailable("The runtime is stopped.")
        return self._proxy

    def tell(self, message: object) -> None:
        """News for the supervisor, and for the peers' (the session may run on one of them);
        it is never asked, so this never waits."""
        if self._supervisor is None or self._gate.stopped:
            raise Unavailable("The runtime is stopped.")
        if not (isinstance(message, Wake) and self._advance_here(message.session_id)):
            self._supervisor.tell(message)
        self._peers.tell(message)

    def _advance_here(self, session_id: str) -> bool:
        """A submit's news straight to the session's live actor, the supervisor's one hop
        spared; whether it took it (if not, the supervisor starts one)."""
        ref = self._sessions.get(session_id)
        if ref is None:
            return False
        try:
            ref.tell(Advance())
        except pykka.ActorDeadError:
            return False
        return True

    def tell_here(self, message: object) -> None:
        """News for this node's supervisor only, if it runs (from peers, the lease, the fence).

        A ``Rescan`` is read on a thread of its own first; a peer's ``Wake`` of a session
        that no actor here runs and another node holds goes no further.
        """
        if isinstance(message, Rescan):
            self._rescan_soon()
        elif not (isinstance(message, Wake) and self._held_elsewhere(message)):
            self._tell_here(message)

    def _tell_here(self, message: object) -> None:
        supervisor = self._supervisor
        if supervisor is not None and not self._gate.stopped:
            with contextlib.suppress(pykka.ActorDeadError):
                supervisor.tell(message)

    def _held_elsewhere(self, wake: Wake) -> bool:
        """Whether a peer's news concerns a session this node neither runs nor holds."""
        node = self._context.lease.node
        if not wake.from_peer or wake.session_id in self._sessions or node is None:
            return False
        try:
            return self._context.store.get_session(wake.session_id).node != node.id
        except Exception as exc:  # the actor it starts reads again
            log.warning("could not read session %s: %s", wake.session_id, exc)
            return False

    def _scan(self) -> Rescan:
        """Take over the sessions of dead nodes (as many batches as there are), then find
        the queues no node runs and, with peers, what this node holds."""
        store, node = self._context.store, self._context.lease.node
        if node is None:
            return Rescan(tuple(store.ownership.unclaimed_with_pending()))
        rescued: list[str] = []
        while batch := store.ownership.rescue(node.id):
            rescued += batch
            if len(batch) < RESCUE_BATCH:
                break
        if rescued:
            log.warning("took over %d sessions of nodes that stopped", len(rescued))
        unclaimed = tuple(store.ownership.unclaimed_with_pending())
        if not store.is_postgres:
            return Rescan(unclaimed)
        held = tuple(store.ownership.held_with_pending(node.id))
        return Rescan(unclaimed, held, tuple(store.ownership.closed_held(node.id)))

    def _rescan_soon(self) -> None:
        """Scan off the asking thread (the lease's must not wait on it); one scan at a
        time, and one more if another was asked for meanwhile."""
        with self._scan_lock:
            if self._scanning:
                self._scan_again = True
                return
            self._scanning = True
        threading.Thread(target=self._scan_while_asked, name="aicli-rescan", daemon=True).start()

    def _scan_while_asked(self) -> None:
        while True:
            try:
                self._tell_here(self._scan())
            except Exception:
                log.exception("could not look for sessions to start")
            with self._scan_lock:
                if not self._scan_again:
                    self._scanning = False
                    return
                self._scan_again = False
