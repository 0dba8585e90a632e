"""This node's life: its lease's news, its fence, its readiness and its drain.

The lease actor calls ``renewed`` after each renewal and the fencer calls
``fenced``; both run on those actors' threads, so anything slow (reaping,
revocation sweeps) goes to a thread of its own, one at a time.
"""

from __future__ import annotations

import logging
import threading
import time

from aicli import access
from aicli.actors.census import CENSUS_KEY
from aicli.actors.claude_bin import claude_version
from aicli.actors.messages import Fence, Rescan
from aicli.actors.session import ActorContext
from aicli.contract import Node, Principal, Task
from aicli.errors import StorageError, Unavailable
from aicli.peers import Peers
from aicli.runtime.gate import Gate
from aicli.runtime.principals import REVOKED_PENDING
from aicli.runtime.processes import Reaper
from aicli.runtime.sessions import CLOSE_MARGIN_S, AfterClose
from aicli.runtime.supervision import SupervisorLink, ask
from aicli.runtime.tasks import Tasks

log = logging.getLogger(__name__)


class NodeLife:
    def __init__(
        self,
        context: ActorContext,
        peers: Peers,
        revocations: access.Revocations,
        link: SupervisorLink,
        gate: Gate,
        reaper: Reaper,
        tasks: Tasks,
        after_close: AfterClose,
    ) -> None:
        """``context``: the store, settings, lease, notifier, census and CLI the actors share."""
        self._store = context.store
        self._settings = context.settings
        self._lease = context.lease
        self._notifier = context.notifier
        self._census = context.census
        self._claude_bin = context.claude_bin
        self._sandbox = context.sandbox
        self._peers = peers
        self._revocations = revocations
        self._link = link
        self._gate = gate
        self._reaper = reaper
        self._tasks = tasks
        self._after_close = after_close
        self._node_ids: list[str] = []  # every node this runtime has been (a fence makes anew)
        self._sweeping = threading.Lock()

    def arrive(self) -> None:
        """Once the lease is held: end what dead runs left, and learn who is revoked."""
        node = self._lease.node
        if node is not None:
            self._node_ids.append(node.id)
        if node is not None and not self._store.is_postgres:
            # One server per SQLite file (``server_lock``): every other node is a dead run.
            self._store.ownership.forget_other_nodes(node.id)
        self._reaper.reap()
        self._revocations.add(self._store.principals.revoked())

    def leave(self) -> None:
        """Session actors end their own trees; this catches whatever escaped them."""
        self._reaper.kill_own(self._node_ids)

    def renewed(self) -> None:
        """The lease holds (or was taken anew). With peers (PostgreSQL): look for work no
        live node runs, have every waiter look again (news may have been lost), and end
        what a node that died since the last look left running on this machine. One
        SQLite server did all that at its start (or its join), and nobody else changes
        its file."""
        node = self._lease.node
        if node is not None and node.id not in self._node_ids:
            self._node_ids.append(node.id)
            self._link.tell_here(Rescan())  # joined anew: start what waited meanwhile
        self._sweep_revocations_in_background()
        if not self._peers.active:
            return
        try:
            self._reaper.look_for_dead_nodes()
        except (StorageError, Unavailable) as exc:
            log.warning("could not look for dead nodes' processes: %s", exc)
        self._notifier.nudge_all()
        self._link.tell_here(Rescan())

    def fenced(self, node_id: str) -> None:
        """From the fencer, its processes dead: nothing of this node may act on its claims."""
        self._lease.lose(node_id)
        self._link.tell_here(Fence())

    def _sweep_revocations_in_background(self) -> None:
        """Learn of revocations no signal brought, and close what a revoked principal still
        has open: off the lease's thread, one sweep at a time (the next catches up)."""
        if not self._sweeping.acquire(blocking=False):
            return

        def sweep() -> None:
            try:
                self._revocations.add(self._store.principals.revoked())
                for principal_id in self._store.principals.revoked_with_open_sessions():
                    _, closed = self._store.revoke_principal(principal_id, REVOKED_PENDING)
                    self._after_close(closed)
            except (StorageError, Unavailable) as exc:
                log.warning("could not look for revoked principals: %s", exc)
            finally:
                self._sweeping.release()

        threading.Thread(target=sweep, name="aicli-revocations", daemon=True).start()

    def nodes(self, principal: Principal | None) -> list[Node]:
        access.require_admin(principal, "list nodes")
        return self._store.nodes.live()

    def readiness(self) -> dict[str, str]:
        try:
            self._store.ping()
        except StorageError as exc:
            raise Unavailable(f"The database does not answer: {exc.message.rstrip('.')}.") from exc
        if not self._gate.accepting:
            raise Unavailable("The server is shutting down.")
        node = self._lease.node
        if node is None:
            raise Unavailable("This node holds no lease in the database; it is joining again.")
        return {
            "database": "ok",
            "claude": claude_version(self._claude_bin),
            "node": node.id,
            "sandbox": "off" if self._sandbox is None else "on",
        }

    def shutdown(self, grace: float | None) -> None:
        self._gate.close()
        grace = self._settings.shutdown_grace if grace is None else grace
        deadline = time.monotonic() + grace
        supervisor = self._link.started
        if supervisor is None:
            return
        try:
            ask(supervisor.drain_sessions())
        except Unavailable:
            log.warning("the supervisor did not answer the drain")
        for task in self._running_here():
            self._tasks.wait(task.id, timeout=max(0.0, deadline - time.monotonic()))
        try:
            ask(supervisor.shutdown_sessions())
        except Unavailable:
            log.warning("the supervisor did not answer the shutdown")
        cutoff = self._settings.cancel_grace + CLOSE_MARGIN_S
        for task in self._running_here():
            self._tasks.wait(task.id, timeout=cutoff)
        self._wait_for_no_processes(time.monotonic() + cutoff)

    def _wait_for_no_processes(self, end: float) -> None:
        while True:
            seen = self._notifier.version(CENSUS_KEY)
            remaining = end - time.monotonic()
            if not len(self._census) or remaining <= 0:
                return
            self._notifier.wait(CENSUS_KEY, seen, remaining)

    def _running_here(self) -> list[Task]:
        """The running tasks of the sessions this node holds (peers run the others)."""
        node = self._lease.node
        return [] if node is None else self._store.running_tasks(node.id)
