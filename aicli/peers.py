"""News between the nodes that share one PostgreSQL database, over ``storage.signals``.

Any node takes any request and writes the rows; the node that runs the session
(and every node with someone waiting on the task) must hear of it at once.
What a node announces to its own waiters (``Notifier``) and tells its own
supervisor about a session (a submit's wake, a cancel or close of a running
task, a decision on an approval) goes to the peers as a short payload, which
each peer turns back into the same announcement or message; so does a
revocation, which ends the revoked principal's waits on every node. Only an actor
already running the session on a peer acts on it: a peer starts none for news
(the submitting node's own wake claims an unclaimed session). Signals can be
lost, so after a reconnect every waiter looks again and the supervisor rescans;
each lease tick does the same (``NodeLife.renewed`` in ``aicli.runtime.node``).

A decision's answer can be larger than a payload may be: the peer rebuilds it
from the approval's row and event (``ApprovalDesk.answer_of``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aicli.actors.messages import CancelRunning, CloseSession, Decided, Rescan, Wake
from aicli.actors.notifier import Notifier
from aicli.approval_desk import ApprovalDesk
from aicli.storage.signals import Signals, signals_for

log = logging.getLogger(__name__)

LISTEN_TIMEOUT_S = 5.0
# A payload is one letter naming the news, a space, and its fields separated by spaces.
# The letters are what nodes of different versions say to one another: never change one.
ANNOUNCED = "k"  # a key announced to waiters: a task's news (``Notifier``)
WAKE = "w"  # a session's queue changed
CANCEL_RUNNING = "c"  # a session's running task is cancelled
CLOSE_SESSION = "x"  # a session is closed
REVOKED = "r"  # a principal is revoked
DECIDED = "d"  # an approval is decided


class Peers:
    def __init__(
        self,
        database_url: str,
        notifier: Notifier,
        desk: ApprovalDesk,
        tell: Callable[[object], None],
        on_revoked: Callable[[str], None],
    ) -> None:
        """``tell``: the local supervisor's mailbox; ``on_revoked``: a peer revoked the
        principal of that id (this node's waits of it must end)."""
        self._notifier = notifier
        self._desk = desk
        self._tell_supervisor = tell
        self._on_revoked = on_revoked
        self._signals: Signals | None = signals_for(database_url, self._heard, self._reconnected)

    @property
    def active(self) -> bool:
        """Whether other nodes may exist (PostgreSQL), so news must travel."""
        return self._signals is not None

    def start(self) -> None:
        """Listen before the node takes requests, so no news of its first moments is missed."""
        if self._signals is None:
            return
        self._signals.start()
        if not self._signals.wait_listening(LISTEN_TIMEOUT_S):
            log.warning("not listening to peers yet; the lease ticks rescan meanwhile")
        self._notifier.relay = self._announced

    def _announced(self, key: str) -> None:
        assert self._signals is not None
        self._signals.send(f"{ANNOUNCED} {key}")

    def close(self) -> None:
        self._notifier.relay = None
        if self._signals is not None:
            self._signals.close()

    def tell(self, message: object) -> None:
        """Pass on what this node told its supervisor, if peers need it."""
        if self._signals is None:
            return
        payload = _payload_of(message)
        if payload is not None:
            self._signals.send(payload)

    def revoked(self, principal_id: str) -> None:
        """Tell the peers that this node revoked a principal."""
        if self._signals is not None:
            self._signals.send(f"{REVOKED} {principal_id}")

    def _heard(self, payload: str) -> None:
        kind, _, rest = payload.partition(" ")
        if kind == ANNOUNCED:
            self._notifier.announce_here(rest)
        elif kind == WAKE:
            self._tell_supervisor(Wake(rest, from_peer=True))
        elif kind == CANCEL_RUNNING:
            session_id, _, task_id = rest.partition(" ")
            self._tell_supervisor(CancelRunning(session_id, task_id))
        elif kind == CLOSE_SESSION:
            self._tell_supervisor(CloseSession(rest))
        elif kind == REVOKED:
            self._on_revoked(rest)
        elif kind == DECIDED:
            session_id, _, approval_id = rest.partition(" ")
            answer = self._desk.answer_of(approval_id)
            if answer is not None:
                self._tell_supervisor(Decided(session_id, answer))
        else:
            log.warning("peers: unknown news %r", payload[:80])

    def _reconnected(self) -> None:
        self._notifier.nudge_all()
        self._tell_supervisor(Rescan())


def _payload_of(message: object) -> str | None:
    if isinstance(message, Wake):
        return f"{WAKE} {message.session_id}"
    if isinstance(message, CancelRunning):
        return f"{CANCEL_RUNNING} {message.session_id} {message.task_id}"
    if isinstance(message, CloseSession):
        return f"{CLOSE_SESSION} {message.session_id}"
    if isinstance(message, Decided):
        return f"{DECIDED} {message.session_id} {message.answer.approval_id}"
    return None
