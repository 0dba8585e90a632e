"""This node's lease in the database: joined at start, renewed every third of its TTL.

One actor owns it, ticked by the one scheduler, so the renewals are messages
like every other timer. A renewal that the database refuses (the lease ran
out, so peers may already act on it) or that has not succeeded for the TTL
less a margin, by this process's monotonic clock, loses the lease: the node
stops answering ready and joins again as a new node, with a new id. Leaving
(a clean stop) deletes the row, so peers need not wait for it to expire.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pykka

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

    @property
    def node(self) -> Node | None:
        """This node while it holds a lease; None while it has none."""
        with self._lock:
            return self._node

    def set(self, node: Node | None) -> None:
        with self._lock:
            self._node = node


class NodeLease(pykka.ThreadingActor):
    def __init__(
        self,
        store: Store,
        scheduler: Scheduler,
        state: LeaseState,
        *,
        url: str | None,
        ttl: float,
        live_processes: Callable[[], int],
    ) -> None:
        super().__init__()
        self.store = store
        self.scheduler = scheduler
        self.state = state
        self.url = url
        self.ttl = ttl
        self.live_processes = live_processes
        self.node: Node | None = None
        self.renewed = 0.0  # monotonic time of the last renewal the database took
        self._join()  # before the start returns: a node answers ready from its first request

    def on_start(self) -> None:
        self._next()

    def on_stop(self) -> None:
        if self.node is not None:
            try:
                self.store.nodes.leave(self.node.id)
            except (StorageError, Unavailable) as exc:  # its lease ends on its own
                log.warning("node %s: could not leave: %s", self.node.id, exc)
        self.state.set(None)

    def on_receive(self, message: object) -> None:
        if isinstance(message, Tick):
            try:
                self._tick()
            finally:
                self._next()

    def _tick(self) -> None:
        if self.node is None:
            self._join()
            return
        started = time.monotonic()  # the database's now() is no earlier than this
        try:
            live = self.live_processes()
            renewed = self.store.nodes.renew(self.node.id, self.ttl, live, live)
        except (StorageError, Unavailable) as exc:
            log.warning("node %s: lease not renewed: %s", self.node.id, exc)
            # The next tick would come too late: give the lease up while it surely lasts.
            if started + self.ttl / 3 - self.renewed > self.ttl - self.ttl / 4:
                self._lose("the database did not renew it in time")
            return
        if renewed is None:
            self._lose("it had run out")
            return
        self.node = renewed
        self.renewed = started
        self.state.set(renewed)

    def _join(self) -> None:
        started = time.monotonic()
        try:
            self.node = self.store.nodes.join(self.url, self.ttl)
        except (StorageError, Unavailable) as exc:
            log.warning("could not join as a node: %s", exc)
            return
        self.renewed = started
        self.state.set(self.node)
        log.info("joined as node %s", self.node.id, extra={"node_id": self.node.id})

    def _lose(self, why: str) -> None:
        assert self.node is not None
        log.warning("node %s: lost its lease (%s); joining again", self.node.id, why)
        self.node = None
        self.state.set(None)

    def _next(self) -> None:
        self.scheduler.tell_later(self.ttl / 3, self.actor_ref, Tick())
