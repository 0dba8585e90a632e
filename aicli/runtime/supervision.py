"""The one way the runtime reaches its supervisor: tells, asks, and the supervisor's life.

Callers never wait on an actor except through ``ask``, which always has a
timeout and says, when it runs out, that the outcome is unknown. A tell for a
session goes to this node's supervisor and to the peers' (the session may run on
one of them); news that came from a peer, the lease or the fence stays here.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, cast

import pykka

from aicli.actors.session import ActorContext
from aicli.actors.supervisor import Supervisor, SupervisorProxy
from aicli.errors import Unavailable
from aicli.peers import Peers
from aicli.runtime.gate import Gate

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

    def start(self) -> None:
        """Start the supervisor and have it take over what stopped nodes left unrun."""
        self._supervisor = Supervisor.start(self._context)
        self._proxy = cast(SupervisorProxy, self._supervisor.proxy())
        rescued = self._proxy.recover().get(timeout=RECOVER_TIMEOUT)
        if rescued:
            log.warning("took over %d sessions that stopped nodes ran", len(rescued))

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
        self._supervisor.tell(message)
        self._peers.tell(message)

    def tell_here(self, message: object) -> None:
        """News for this node's supervisor only, if it runs (from peers, the lease, the fence)."""
        supervisor = self._supervisor
        if supervisor is not None and not self._gate.stopped:
            with contextlib.suppress(pykka.ActorDeadError):
                supervisor.tell(message)
