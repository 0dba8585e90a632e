"""Where people decide approvals: the runtime's part of "a person in the loop".

A decision is checked (who may decide, and whether the body fits the request),
committed in the store, and only then handed to the session's actor, which
answers the CLI. The store settles every race: a person, the approval's
timeout and the end of its task each try to move it from ``pending``, and the
losers are told ``ApprovalDecided``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from aicli import access
from aicli.actors.approval_requests import DENIED, allow, deny
from aicli.actors.messages import Answer, Decided
from aicli.actors.notifier import Notifier, events_of
from aicli.contract import (
    Approval,
    ApprovalDecision,
    ApprovalKind,
    ApprovalListQuery,
    ApprovalRule,
    ApprovalStatus,
    Decision,
    Page,
    Principal,
    encode,
    utcnow,
)
from aicli.errors import ApprovalDecided, InvalidRequest
from aicli.storage import Store

log = logging.getLogger(__name__)

MAX_RULE_BYTES = 16_384


def _refuse(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, {"field": field})


def response_to(approval: Approval, decision: ApprovalDecision) -> dict[str, Any]:
    """What the CLI is answered; ``InvalidRequest`` (naming the field) for a body that does
    not fit this approval."""
    if decision.decision == Decision.DENY:
        for name in ("updated_input", "answers"):
            if getattr(decision, name) is not None:
                raise _refuse(name, f"'{name}' goes with 'allow', not with 'deny'.")
        if decision.remember:
            raise _refuse("remember", "'remember' goes with 'allow', not with 'deny'.")
        return deny(decision.message or DENIED)
    given = dict(approval.input if decision.updated_input is None else decision.updated_input)
    if approval.kind == ApprovalKind.QUESTION:
        if decision.remember:
            raise _refuse("remember", "'remember' allows tool uses; a question is answered once.")
        given["answers"] = _answers(approval, decision.answers)
    elif decision.answers is not None:
        raise _refuse("answers", "'answers' answers a question; this approval is a tool use.")
    if decision.remember and decision.updated_input is not None:
        raise _refuse(
            "remember",
            "'remember' allows later uses as Claude asks for them, so it cannot go with "
            "'updated_input'.",
        )
    if decision.remember and len(encode(approval.input)) > MAX_RULE_BYTES:
        raise _refuse(
            "remember",
            f"This tool use's input is over {MAX_RULE_BYTES} bytes, too big to remember: every "
            "read of the session would carry it.",
        )
    return allow(given)


def _answers(approval: Approval, answers: dict[str, str] | None) -> dict[str, str]:
    """Each answer keyed by its question's text, as the CLI expects them."""
    asked = approval.input.get("questions")
    questions = [
        q.get("question")
        for q in (asked if isinstance(asked, list) else [])
        if isinstance(q, dict) and isinstance(q.get("question"), str)
    ]
    if not answers:
        raise _refuse(
            "answers", "'answers' is required to allow a question: the chosen answer by question."
        )
    for text in answers:
        if text not in questions:
            asked = "; ".join(repr(q) for q in questions) or "none"
            raise _refuse(f"answers.{text}", f"No question {text!r} was asked; asked: {asked}.")
    return dict(answers)


def decided_answer(approval: Approval, sent: Mapping[str, Any]) -> Answer:
    """What the CLI is answered for a decided ``approval``, from what the store keeps of
    the decision: the row (its verdict, a deny's message) and ``sent`` (what the person
    sent besides, kept in the ``approval_decided`` event). The node where a person
    decides and a peer whose CLI asked both answer through here, so the two cannot
    differ."""
    if approval.status == ApprovalStatus.DENIED:
        return Answer(approval.id, deny(approval.message or DENIED))
    decision = ApprovalDecision(
        decision=Decision.ALLOW,
        message=approval.message,
        updated_input=sent.get("updated_input"),
        answers=sent.get("answers"),
    )
    return Answer(approval.id, response_to(approval, decision))


class ApprovalDesk:
    def __init__(self, store: Store, notifier: Notifier, tell: Callable[[object], None]) -> None:
        self._store = store
        self._notifier = notifier
        self._tell_supervisor = tell

    def list(self, query: ApprovalListQuery, principal: Principal | None) -> Page:
        """The page, narrowed to what ``principal`` may see; the filters' session and task
        are checked only when it is empty (see ``runtime.tasks.Tasks.page``)."""
        page = self._store.approvals.list(access.narrowed(principal, query))
        if not page.data and query.session_id is not None:
            access.check_filter_session(self._store, principal, query.session_id)
        if not page.data and query.task_id is not None:
            access.check_filter_task(self._store, principal, query.task_id)
        return page

    def get(self, approval_id: str, *, principal: Principal | None = None) -> Approval:
        access.check_approval(self._store, principal, approval_id)
        return self._store.approvals.get(approval_id)

    def answer_of(self, approval_id: str) -> Answer | None:
        """The answer of a decision another node committed, rebuilt from the store, for the
        node whose CLI asked; None unless a person decided it (a rule or timeout is told
        by the asking node itself)."""
        approval = self._store.approvals.get(approval_id)
        if approval.status not in (ApprovalStatus.ALLOWED, ApprovalStatus.DENIED):
            return None
        sent: dict[str, Any] = {}
        for event in reversed(self._store.list_events(approval.task_id)):
            data = event.data
            if event.type == "approval_decided" and data["approval"]["id"] == approval.id:
                sent = data
                break
        return decided_answer(approval, sent)

    def decide(
        self, approval_id: str, decision: ApprovalDecision, *, principal: Principal | None = None
    ) -> Approval:
        """Commit the decision, then have the session's actor answer the CLI with it."""
        approval = self.get(approval_id, principal=principal)
        if approval.status != ApprovalStatus.PENDING:  # whatever the body says
            raise ApprovalDecided(approval.id, approval.status, approval.decided_by)
        response = response_to(approval, decision)
        allowed = decision.decision == Decision.ALLOW
        rule = None
        if allowed and decision.remember:
            rule = ApprovalRule(
                tool_name=approval.tool_name,
                input=approval.input,
                approval_id=approval.id,
                created_at=utcnow(),
            )
        sent = {
            name: getattr(decision, name)
            for name in ("updated_input", "answers")
            if getattr(decision, name) is not None
        }
        decided = self._store.approvals.decide(
            approval.id,
            ApprovalStatus.ALLOWED if allowed else ApprovalStatus.DENIED,
            access.decider(principal),
            decision.message if allowed else response["message"],
            rule,
            sent,
        )
        self._notifier.announce(events_of(decided.task_id))
        self._tell_supervisor(Decided(decided.session_id, decided_answer(decided, sent)))
        log.info(
            "approval %s",
            decided.status,
            extra={
                "approval_id": decided.id,
                "task_id": decided.task_id,
                "decided_by": decided.decided_by,
                "remember": rule is not None,
            },
        )
        return decided
