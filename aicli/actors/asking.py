"""The session actor's part in approvals: the CLI asks, a person (or a rule, or the clock)
decides, and the actor answers.

A mixin of ``SessionActor`` (kept apart so each file has one job): its methods
run as the actor's handlers, on the actor's thread, and use its state (the
running ``Turn``, the process, the store). Nothing here waits: the CLI's
request arrives as a message from the reader thread, a decision as a message
from the runtime, a timeout as a message from the scheduler.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aicli.actors.approval_requests import (
    NO_TURN,
    allow,
    deny,
    matching_rule,
    tool_request_of,
    unanswered,
)
from aicli.actors.messages import Answer, ApprovalDeadline
from aicli.actors.notifier import events_of
from aicli.actors.turn import SERVER_SHUTDOWN
from aicli.contract import ApprovalStatus, TaskStatus
from aicli.errors import ApprovalDecided

if TYPE_CHECKING:
    from aicli.actors.session import SessionActor

log = logging.getLogger("aicli.actors.session")


class AskingMixin:
    def _on_control_request(self: SessionActor, data: dict[str, Any]) -> None:
        """The CLI waits for our answer: record the request, then ask a person (or a rule).

        The request is committed (pending, with its event and the task waiting on it)
        before anyone hears of it; the answer goes out only once a decision is committed.
        """
        assert self.process is not None
        asked = tool_request_of(data)
        if asked is None:
            log.warning("session %s: unexpected control request %.200r", self.session_id, data)
            return
        turn = self.current
        if turn is None or turn.outcome is not None or turn.end is not None:
            self.process.answer(asked.request_id, deny(NO_TURN))
            return
        rules = self.store.get_session(self.session_id).approval_rules
        rule = matching_rule(rules, asked.tool_name, asked.input)
        turn.asked = True  # before the commit: a failure after it must still expire the row
        approval = self.store.approvals.request(
            session_id=self.session_id,
            task_id=turn.task.id,
            kind=asked.kind,
            tool_name=asked.tool_name,
            given=asked.input,
            suggestions=asked.suggestions,
            rule=rule is not None,
        )
        self.ctx.notifier.announce(events_of(turn.task.id))
        log.info(
            "approval %s",
            approval.status,
            extra={"approval_id": approval.id, "task_id": turn.task.id, "tool": asked.tool_name},
        )
        if rule is not None:
            self.process.answer(asked.request_id, allow(asked.input))
            return
        turn.waiting[approval.id] = asked.request_id
        turn.pause_clock()
        turn.timers.append(
            self.ctx.scheduler.tell_later(
                self.session.approval_timeout_s, self.actor_ref, ApprovalDeadline(approval.id)
            )
        )
        if self.draining:
            self._end_running(TaskStatus.CANCELLED, SERVER_SHUTDOWN)

    def _on_answer(self: SessionActor, message: Answer) -> None:
        """A decision is committed: tell the CLI, and the task's clock goes on."""
        turn = self.current
        if turn is None or message.approval_id not in turn.waiting:
            return  # the turn is over: its end expired what was left
        request_id = turn.waiting.pop(message.approval_id)
        if self.process is not None and not self.leaving and turn.end is None:
            self.process.answer(request_id, message.response)
        if not turn.waiting and turn.end is None:
            turn.start_clock(self.ctx.scheduler, self.actor_ref)

    def _on_approval_deadline(self: SessionActor, message: ApprovalDeadline) -> None:
        turn = self.current
        if turn is None or message.approval_id not in turn.waiting:
            return
        text = unanswered(self.session.approval_timeout_s)
        try:
            self.store.approvals.decide(
                message.approval_id, ApprovalStatus.EXPIRED, "timeout", text
            )
        except ApprovalDecided:
            return  # a person was quicker; their answer is on its way here
        self.ctx.notifier.announce(events_of(turn.task.id))
        log.info("approval expired", extra={"approval_id": message.approval_id})
        self._on_answer(Answer(message.approval_id, deny(text)))

    def _forget_request(self: SessionActor, request_id: str) -> None:
        """The CLI withdrew a request (we interrupted the turn): it wants no answer now."""
        turn = self.current
        if turn is not None:
            turn.waiting = {a: r for a, r in turn.waiting.items() if r != request_id}
