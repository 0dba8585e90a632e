"""The fence: this node's Claude processes die before its lease can run out.

Peers take a session over once its node's lease ran out by the database's
clock. Before that moment this node must have stopped acting for it, even if
it cannot reach the database at all (a renewal stuck in the driver, a cut
network) and even if the server process is not scheduled at all (stopped,
swapped out). So the lease actor arms a deadline after each renewal, TTL less a
margin from when that renewal was sent, by the machine's monotonic clock, and
this actor, which never touches the database, hands it on to the node's
watchdog (``watchdog``: a process of its own that kills the node's process
trees when the deadline passes unrenewed, scheduled or not). Here, in the
server, the same deadline fences the node itself: the lease is marked lost
(``/readyz`` answers 503) and the supervisor stops the session actors without
writing; then the watchdog is told, and ends whatever is left (a process
started while the fence was on its way). A renewal that comes back after its
deadline is not armed (``LeaseState.set`` refuses it: the watchdog has acted on
that lease), so the fence falls. The lease actor then joins again as a new node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import pykka

from aicli.actors.scheduler import Scheduler, Timer
from aicli.actors.watchdog import WatchdogProcess

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Armed:
    """``node_id`` holds its lease until ``until`` (monotonic) at least: fence it then."""

    node_id: str
    until: float


@dataclass(frozen=True)
class FenceNow:
    """The database refused to renew ``node_id``'s lease: it has run out already."""

    node_id: str
    why: str


@dataclass(frozen=True)
class _Due:
    node_id: str
    token: int


class Fencer(pykka.ThreadingActor):
    def __init__(
        self,
        scheduler: Scheduler,
        owner_prefix: str,
        on_fenced: Callable[[str], None],
    ) -> None:
        """``on_fenced(node_id)``: tell the rest of the node (the lease state and the
        supervisor), before the kill; it must not touch the database either."""
        super().__init__()
        self.scheduler = scheduler
        self.watchdog = WatchdogProcess(owner_prefix)
        self.on_fenced = on_fenced
        self.token = 0
        self.timer: Timer | None = None
        self.fenced: set[str] = set()

    def on_start(self) -> None:
        self.watchdog.start()

    def on_stop(self) -> None:
        """The server stops, its session actors gone: the watchdog ends what is left, and
        exits."""
        self.watchdog.close()

    def on_receive(self, message: object) -> None:
        if isinstance(message, Armed):
            if message.node_id in self.fenced:
                return
            self.token += 1
            if self.timer is not None:
                self.timer.cancel()
            self.watchdog.arm(message.node_id, message.until)
            delay = message.until - self.scheduler.now()
            due = _Due(message.node_id, self.token)
            self.timer = self.scheduler.tell_later(delay, self.actor_ref, due)
        elif isinstance(message, _Due):
            if message.token == self.token:
                self._fence(message.node_id, "its lease was not renewed in time")
        elif isinstance(message, FenceNow):
            self._fence(message.node_id, message.why)

    def _fence(self, node_id: str, why: str) -> None:
        if node_id in self.fenced:
            return
        self.fenced.add(node_id)
        self.token += 1
        log.warning("node %s: fencing itself (%s): ending its Claude processes", node_id, why)
        self.on_fenced(node_id)  # first: nothing may start a process under this id any more
        self.watchdog.fenced(node_id)
