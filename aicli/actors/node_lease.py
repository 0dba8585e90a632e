"""This node's lease in the database: joined at start, renewed every third of its TTL.

One actor owns it, ticked by the one scheduler, so the renewals are messages
like every other timer. After each renewal it arms the fence (``fencer``):
if no renewal has succeeded by the TTL less a margin, by this process's
monotonic clock, the node fences itself, even while this actor is stuck in a
call to a database that does not answer. A renewal that the database refuses
(the lease ran out, so peers may act on it already) fences at once. A fenced
node joins again as a new node, with a new id, after removing its old row (so
that peers take its sessions without waiting for the old lease to run out).
Leaving (a clean stop) deletes the row too.

Without a fencer (SQLite, where no peer can take a session over) a lost lease
is only joined again.

Each successful renewal also tells the node (``on_renewed``) to look for work
no node runs and for sessions of nodes that died.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from aicli.actors.fencer import Armed, FenceNow
from aicli.actors.scheduler import Scheduler
from aicli.contract import Node
from aicli.errors import StorageError, Unavailable
from aicli.storage import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tick:
    """Time to renew the lease (or, having lost it, to join again)."""


class LeaseState:
    """What the rest of the process reads about the lease, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._node: Node | None = None
        self._until: float | None = None  # the fence's deadline (monotonic), if any
        self._lost: set[str] = set()  # never held again: the fence has acted on them

    @property
    def node(self) -> Node | None:
        """This node while it holds a lease; None while it has none, and from its fence's
        deadline on: a server that was not scheduled at that moment (stopped, swapped
        out) acts on nothing when it runs again, before its fence has even run."""
        with self._lock:
            if self._until is not None and time.monotonic() >= self._until:
                return None
            return self._node

    def set(self, node: Node | None, until: float | None = None) -> bool:
        """Hold ``node`` (or none), fenced at ``until`` if given; refused (False) for a
        node already lost, whose renewal came back just as it was fenced, or past its
        deadline (the watchdog has acted on it: its fence follows)."""
        with self._lock:
            if node is not None and node.id in self._lost:
                return False
            held, deadline = self._node, self._until
            overdue = deadline is not None and time.monotonic() >= deadline
            if node is not None and held is not None and held.id == node.id and overdue:
                return False
            self._node, self._until = node, until
            return True

    def is_lost(self, node_id: str) -> bool:
        """Whether the fence has acted on ``node_id``."""
        with self._lock:
            return node_id in self._lost

    def lose(self, node_id: str) -> bool:
        """The lease of ``node_id`` is gone (unless a newer one is held); whether it was held."""
        with self._lock:
            self._lost.add(node_id)
            if self._node is None or self._node.id != node_id:
                return False
            self._node = None
            return True


def fence_margin(ttl: float) -> float:
    """How long before its lease runs out (by the database) a node stops acting on it."""
    return ttl / 6


class NodeLease(pykka.ThreadingActor):
    def __init__(
        self,
        store: Store,
        scheduler: Scheduler,
        state: LeaseState,
        fencer: pykka.ActorRef[Any] | None,
        *,
        url: str | None,
        ttl: float,
        sandboxed: bool,
        live_processes: Callable[[], int],
        on_renewed: Callable[[], None],
    ) -> None:
        super().__init__()
        self.store = store
        self.scheduler = scheduler
        self.state = state
        self.fencer = fencer
        self.url = url
        self.ttl = ttl
        self.sandboxed = sandboxed
        self.live_processes = live_processes
        self.on_renewed = on_renewed
        self.node: Node | None = None
        self._join()  # before the start returns: a node answers ready from its first request

    def on_start(self) -> None:
        self._next()

    def on_stop(self) -> None:
        if self.node is not None:
            self._leave(self.node)
        self.state.set(None)

    def on_receive(self, message: object) -> None:
        if isinstance(message, Tick):
            try:
                self._tick()
            except Exception:  # a bug must not end the renewals (the fence would follow)
                log.exception("node lease: the tick failed")
            finally:
                self._next()

    def _tick(self) -> None:
        if self.node is not None and self.state.is_lost(self.node.id):  # fenced since the last tick
            self._leave(self.node)
            self.node = None
        if self.node is None:
            self._join()
            if self.node is not None:
                self.on_renewed()
            return
        started = time.monotonic()  # the database's now() is no earlier than this
        try:
            live = self.live_processes()
            renewed = self.store.nodes.renew(self.node.id, self.ttl, live, live)
        except (StorageError, Unavailable) as exc:
            log.warning("node %s: lease not renewed: %s", self.node.id, exc)
            return  # the fence falls when the armed deadline passes
        if renewed is None:
            if self.fencer is None:
                self.state.lose(self.node.id)  # the next tick joins again
            else:
                self.fencer.tell(FenceNow(self.node.id, "the database says its lease ran out"))
            return
        if self.state.is_lost(self.node.id):  # fenced while the renewal was on its way
            return
        self._hold(renewed, started)
        self.on_renewed()

    def _join(self) -> None:
        started = time.monotonic()
        try:
            node = self.store.nodes.join(self.url, self.ttl, self.sandboxed)
        except (StorageError, Unavailable) as exc:
            log.warning("could not join as a node: %s", exc)
            return
        self._hold(node, started)
        log.info("joined as node %s", node.id, extra={"node_id": node.id})

    def _hold(self, node: Node, renewed_at: float) -> None:
        self.node = node
        if self.fencer is None:  # no peer can take its sessions: no deadline
            self.state.set(node)
            return
        until = renewed_at + self.ttl - fence_margin(self.ttl)
        if not self.state.set(node, until):
            return  # fenced meanwhile: the next tick joins as a new node
        self.fencer.tell(Armed(node.id, until))

    def _leave(self, node: Node) -> None:
        try:
            self.store.nodes.leave(node.id)
        except (StorageError, Unavailable) as exc:  # its lease ends on its own
            log.warning("node %s: could not leave: %s", node.id, exc)

    def _next(self) -> None:
        self.scheduler.tell_later(self.ttl / 3, self.actor_ref, Tick())
