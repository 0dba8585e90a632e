"""The session actor's part in approvals: the CLI asks, a person (or a rule, or the clock)
decides, and the actor answers.

A component of ``SessionActor``: its methods run in the actor's handlers, on the actor's
thread, and are handed the running ``Turn`` and the process that may be spoken to (None
once it is on its way out). Nothing here waits: the CLI's request arrives as a message
from the reader thread, a decision as a message from the runtime, a timeout as a
message from the scheduler.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import pykka

from aicli.actors.approval_requests import (
    NO_TURN,
    UNSERVED,
    WITHDRAWN,
    allow,
    deny,
    tool_request_of,
    unanswered,
)
from aicli.actors.claude_process import ClaudeLike
from aicli.actors.messages import Answer, ApprovalDeadline
from aicli.actors.notifier import events_of
from aicli.actors.session_context import SESSION_LOG, ActorContext
from aicli.actors.turn import Turn
from aicli.contract import ApprovalStatus
from aicli.errors import ApprovalDecided
from aicli.storage.approvals import SYSTEM, TIMEOUT

log = logging.getLogger(SESSION_LOG)


class TurnApprovals:
    def __init__(
        self,
        context: ActorContext,
        session_id: str,
        ref: pykka.ActorRef[Any],
        lease_gone: Callable[[], bool],
    ) -> None:
        self.ctx = context
        self.store = context.store
        self.session_id = session_id
        self.ref = ref
        # Whether the actor's claim outlived this node's lease (and so it let go).
        self.lease_gone = lease_gone

    def request(
        self, data: dict[str, Any], turn: Turn | None, process: ClaudeLike, timeout_s: float
    ) -> bool:
        """The CLI waits for our answer: record the request, then ask a person (or a rule);
        whether the turn now waits for a person.

        The request is committed (pending, with its event and the task waiting on it)
        before anyone hears of it; the answer goes out only once a decision is committed.
        """
        request = tool_request_of(data)
        if request is None:
            log.warning("session %s: unexpected control request %.200r", self.session_id, data)
            process.refuse(str(data.get("request_id")), UNSERVED)
            return False
        if turn is None or turn.outcome is not None or turn.interrupted_as is not None:
            process.answer(request.request_id, deny(NO_TURN))
            return False
        rules = self.store.get_session(self.session_id).approval_rules
        ruled = any(rule.allows(request.tool_name, request.input) for rule in rules)
        approval = self.store.approvals.request(
            session_id=self.session_id,
            task_id=turn.task.id,
            kind=request.kind,
            tool_name=request.tool_name,
            given=request.input,
            suggestions=request.suggestions,
            rule=ruled,
        )
        self.ctx.notifier.announce(events_of(turn.task.id))
        log.info(
            "approval %s",
            approval.status,
            extra={"approval_id": approval.id, "task_id": turn.task.id, "tool": request.tool_name},
        )
        if ruled:
            process.answer(request.request_id, allow(request.input))
            return False
        turn.waiting[approval.id] = request.request_id
        turn.pause_clock()
        turn.timers.append(
            self.ctx.scheduler.tell_later(timeout_s, self.ref, ApprovalDeadline(approval.id))
        )
        return True

    def answer(self, message: Answer, turn: Turn | None, process: ClaudeLike | None) -> None:
        """A decision is committed: tell the CLI, and the task's clock goes on."""
        if turn is None or message.approval_id not in turn.waiting:
            return  # the turn is over: its end expired what was left
        if self.lease_gone():
            return
        request_id = turn.waiting.pop(message.approval_id)
        if turn.interrupted_as is not None or turn.outcome is not None:
            return
        if process is not None:
            process.answer(request_id, message.response)
        if not turn.waiting:
            turn.start_clock(self.ctx.scheduler, self.ref)

    def deadline(
        self,
        message: ApprovalDeadline,
        turn: Turn | None,
        process: ClaudeLike | None,
        timeout_s: float,
    ) -> None:
        if turn is None or message.approval_id not in turn.waiting:
            return
        text = unanswered(timeout_s)
        try:
            self.store.approvals.decide(message.approval_id, ApprovalStatus.EXPIRED, TIMEOUT, text)
        except ApprovalDecided:
            # A person was quicker. Their answer is on its way here, unless it was decided
            # on a peer and the word of it was lost: rebuilt from the store, the first of
            # the two to arrive is sent, the other ignored.
            answer = self.ctx.answer_of(message.approval_id)
            if answer is not None:
                self.answer(answer, turn, process)
            return
        self.ctx.notifier.announce(events_of(turn.task.id))
        log.info("approval expired", extra={"approval_id": message.approval_id})
        self.answer(Answer(message.approval_id, deny(text)), turn, process)

    def expire_waiting(self, turn: Turn | None, why: str) -> None:
        """The turn is ending (cancel, close, shutdown, or the CLI withdrew a request): what
        still waits expires now, before a decision could win for a tool that will not run."""
        if turn is None or not turn.waiting:
            return
        turn.waiting.clear()
        if self.store.approvals.expire(turn.task.id, why):
            self.ctx.notifier.announce(events_of(turn.task.id))

    def withdraw(self, turn: Turn | None, request_id: str) -> None:
        """The CLI withdrew a request: it wants no answer, and no one may decide it now."""
        if turn is None or request_id not in turn.waiting.values():
            return
        [approval_id] = [a for a, r in turn.waiting.items() if r == request_id]
        del turn.waiting[approval_id]
        with contextlib.suppress(ApprovalDecided):
            self.store.approvals.decide(approval_id, ApprovalStatus.EXPIRED, SYSTEM, WITHDRAWN)
            self.ctx.notifier.announce(events_of(turn.task.id))
        if not turn.waiting and turn.interrupted_as is None and turn.outcome is None:
            turn.start_clock(self.ctx.scheduler, self.ref)
