"""This node's claim on a session (``ownership``): every write of the actor names its epoch.

A session runs on one node at a time. The claim is taken when a task is about to run,
checked against this node's lease before anything of a turn goes on, and released
(best effort) when the actor stops: a claim not released ends with the node's lease.
"""

from __future__ import annotations

import logging
import os

from aicli.actors.session_context import SESSION_LOG, ActorContext
from aicli.contract import Session
from aicli.errors import StorageError, Unavailable

log = logging.getLogger(SESSION_LOG)

# Why the claim was not taken when the answer is "later", not "let go".
NO_LEASE = "this node has no lease yet"


class SessionClaim:
    def __init__(self, context: ActorContext, session_id: str) -> None:
        self.ctx = context
        self.session_id = session_id
        self.node_id: str | None = None
        self.epoch: int | None = None

    def take(self, workdir: str) -> str | None:
        """None if this node holds the session, claiming it first if need be; else why not:
        ``NO_LEASE`` (try again soon), or why the actor lets the session go.

        Not claimed here: while this node has no lease, while another live node holds
        it, or when its workdir is missing on this node while other nodes could run it
        (workdirs live on storage every node sees).
        """
        node = self.ctx.lease.node
        if self.epoch is not None:
            if node is not None and node.id == self.node_id:
                return None
            return "this node's lease is gone"
        if node is None:
            return NO_LEASE
        if not os.path.isdir(workdir) and len(self.ctx.store.nodes.live()) > 1:
            log.warning(
                "session %s: workdir %s is missing on this node; leaving it to the others",
                self.session_id,
                workdir,
            )
            return "its workdir is missing here"
        epoch = self.ctx.store.ownership.claim(self.session_id, node.id)
        if epoch is None:
            return "another node runs it"
        self.node_id, self.epoch = node.id, epoch
        return None

    def runs_elsewhere(self, session: Session, *, held_only: bool) -> bool:
        """Whether a new actor should leave the session alone: this node has no lease (the
        first rescan after its join looks again), another live node holds the session (it
        heard of the work from its peers), or, with ``held_only`` (a peer's news), this
        node does not hold it."""
        node = self.ctx.lease.node
        if node is None:
            return True
        if held_only:
            return session.node != node.id
        return session.node not in (None, node.id) and self.ctx.store.ownership.owner_live(
            self.session_id, node.id
        )

    def lease_lost(self) -> bool:
        """Whether the lease this claim was taken under is gone, by this node's clock (even
        before its fence ran: the server may just have woken up past it)."""
        if self.epoch is None:
            return False
        node = self.ctx.lease.node
        return node is None or node.id != self.node_id

    def drop(self) -> None:
        """Another node holds the session (or must): the claim is no longer ours to use."""
        self.epoch = None

    def release(self) -> None:
        """Best effort: a claim not released ends with this node's lease."""
        if self.epoch is None or self.node_id is None:
            return
        try:
            self.ctx.store.ownership.release(self.session_id, self.node_id, self.epoch)
        except (StorageError, Unavailable) as exc:
            log.warning("session %s: could not let go of its claim: %s", self.session_id, exc)
        self.epoch = None
