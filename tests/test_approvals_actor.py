"""Approvals through the runtime with a scripted Claude: the actor's side of a person in the loop.

``[[ask]]`` makes the scripted process send a ``can_use_tool`` request and wait for
the answer, as the real CLI does with ``--permission-prompt-tool stdio``; the
answers it got are kept. So these tests check, in well under a second each, what
the HTTP tests with the real CLI cannot time precisely: that the answer the CLI
gets is the one committed, that the task's timeout stops while a person thinks,
and that every way a turn can end (cancel, close, shutdown, the approval's own
timeout) leaves no approval pending.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from aicli import Runtime
from aicli.actors.approval_requests import UNSERVED, WITHDRAWN, unanswered
from aicli.actors.session import (
    CANCELLED_RUNNING,
    SERVER_SHUTDOWN,
    SESSION_CLOSED_RUNNING,
)
from aicli.contract import Approval, ApprovalStatus, Session, TaskStatus
from aicli.errors import ApprovalDecided
from aicli.testing.scripted_claude import ScriptedClaude
from aicli.testing.waiting import wait_for

# What the scripted process asks to run (see ``ScriptedProcess._ask``).
BASH = {"command": "echo hi > hi.txt", "description": "Write a file"}
ALLOWED = {"behavior": "allow", "updatedInput": BASH}


@pytest.fixture
def rt(start_scripted) -> Runtime:
    return start_scripted()


@pytest.fixture
def session(rt: Runtime, workdir: str) -> Session:
    return rt.open_session(workdir=workdir, approvals="ask")


def pending_of(rt: Runtime, task_id: str, timeout: float = 60.0) -> Approval:
    """The task's pending approval, once it is committed (a deadline for a first task's CLI
    to start in its sandbox and ask, which took over 10 s on a loaded machine)."""

    def listed() -> Approval | None:
        page = rt.approvals(task_id=task_id, status=["pending"])
        return page.data[0] if page.data else None

    return wait_for(listed, timeout, f"a pending approval of task {task_id}")


def only_approval(rt: Runtime, task_id: str) -> Approval:
    (approval,) = rt.approvals(task_id=task_id).data
    return approval


def answers(scripted: ScriptedClaude, workdir: str) -> list[dict[str, Any]]:
    """Every answer the session's processes got, in order."""
    return [a for p in scripted.processes if p.workdir == workdir for a in p.answers]


def event_types(rt: Runtime, task_id: str) -> list[str]:
    return [event.type for event in rt.events(task_id)]


def test_an_ask_waits_as_one_pending_approval_and_allow_lets_the_turn_finish(
    rt, scripted, session, workdir
):
    task = rt.submit(session.id, "[[ask]] write it")
    approval = pending_of(rt, task.id)
    assert (approval.kind, approval.tool_name, approval.input) == ("tool", "Bash", BASH)
    assert (approval.session_id, approval.decided_by) == (session.id, None)
    running = rt.get_task(task.id)
    assert (running.status, running.awaiting_approval) == (TaskStatus.RUNNING, approval.id)
    assert [a.id for a in rt.approvals(session_id=session.id).data] == [approval.id]
    assert answers(scripted, workdir) == []  # the CLI waits

    decided = rt.decide(approval.id, "allow")
    assert (decided.status, decided.decided_by) == (ApprovalStatus.ALLOWED, "root")
    done = rt.wait(task.id, timeout=10)
    assert done.status == TaskStatus.COMPLETED and done.output == "done: [[ask]] write it"
    assert done.awaiting_approval is None
    assert answers(scripted, workdir) == [ALLOWED]
    assert rt.get_approval(approval.id) == decided


def test_deny_with_a_message_is_what_the_cli_is_told(rt, scripted, session, workdir):
    task = rt.submit(session.id, "[[ask]]")
    approval = pending_of(rt, task.id)
    decided = rt.decide(approval.id, "deny", message="Not in this repository.")
    assert (decided.status, decided.message) == (ApprovalStatus.DENIED, "Not in this repository.")
    done = rt.wait(task.id, timeout=10)
    assert done.status == TaskStatus.COMPLETED and done.awaiting_approval is None
    assert answers(scripted, workdir) == [
        {"behavior": "deny", "message": "Not in this repository."}
    ]


def test_an_approval_nobody_answers_expires_and_the_cli_is_denied(rt, scripted, workdir):
    session = rt.open_session(workdir=workdir, approvals="ask", approval_timeout_s=0.5)
    task = rt.submit(session.id, "[[ask]]")
    done = rt.wait(task.id, timeout=10)
    assert done.status == TaskStatus.COMPLETED and done.awaiting_approval is None
    expired = only_approval(rt, task.id)
    assert (expired.status, expired.decided_by) == (ApprovalStatus.EXPIRED, "timeout")
    assert expired.message == unanswered(0.5)
    assert "No one answered" in expired.message
    assert answers(scripted, workdir) == [{"behavior": "deny", "message": expired.message}]
    assert event_types(rt, task.id).count("approval_decided") == 1


def test_the_task_timeout_is_paused_while_a_person_thinks(rt, scripted, session, workdir):
    task = rt.submit(session.id, "[[ask]] [[slow:0.5]]", timeout_s=1.0)
    approval = pending_of(rt, task.id)
    # Deliberately nobody answers for 2 s: twice the task's timeout, which must not run.
    threading.Event().wait(2.0)
    assert rt.get_task(task.id).status == TaskStatus.RUNNING
    rt.decide(approval.id, "allow")
    done = rt.wait(task.id, timeout=10)
    assert done.status == TaskStatus.COMPLETED, done.error
    assert answers(scripted, workdir) == [ALLOWED]


def test_the_task_timeout_goes_on_once_the_person_answered(rt, session):
    task = rt.submit(session.id, "[[ask]] [[slow:3]]", timeout_s=1.0)
    approval = pending_of(rt, task.id)
    answered = time.monotonic()
    rt.decide(approval.id, "allow")
    done = rt.wait(task.id, timeout=10)
    worked = time.monotonic() - answered
    assert done.status == TaskStatus.FAILED
    assert done.error.startswith("Timed out after 1 s")
    # About the second of work left (the ask itself took milliseconds), not 3 s, not none.
    assert 0.6 < worked < 2.5, worked
    assert done.awaiting_approval is None


def test_a_request_the_cli_withdraws_expires_and_the_clock_goes_on(rt, scripted, session, workdir):
    task = rt.submit(session.id, "[[ask]] [[withdraw]] [[slow:3]]", timeout_s=1.0)
    done = rt.wait(task.id, timeout=10)
    assert done.status == TaskStatus.FAILED and done.error.startswith("Timed out after 1 s")
    withdrawn = only_approval(rt, task.id)
    assert (withdrawn.status, withdrawn.decided_by) == (ApprovalStatus.EXPIRED, "system")
    assert withdrawn.message == WITHDRAWN
    assert answers(scripted, workdir) == []  # a withdrawn request gets no answer


def test_a_control_request_of_another_kind_is_refused_not_left_waiting(
    rt, scripted, session, workdir
):
    task = rt.submit(session.id, "[[control]]")
    assert rt.wait(task.id, timeout=10).status == TaskStatus.COMPLETED
    assert answers(scripted, workdir) == [{"error": UNSERVED}]
    assert rt.approvals(task_id=task.id).data == []


def test_cancelling_a_task_that_waits_expires_its_approval(rt, scripted, session, workdir):
    task = rt.submit(session.id, "[[ask]]")
    approval = pending_of(rt, task.id)
    cancelled = rt.cancel(task.id)
    assert cancelled.status == TaskStatus.CANCELLED and cancelled.error == CANCELLED_RUNNING
    assert cancelled.awaiting_approval is None
    expired = rt.get_approval(approval.id)
    assert (expired.status, expired.decided_by) == (ApprovalStatus.EXPIRED, "system")
    assert "cancelled" in (expired.message or "")
    assert answers(scripted, workdir) == []


def test_closing_a_session_that_waits_expires_its_approval(rt, session):
    task = rt.submit(session.id, "[[ask]]")
    approval = pending_of(rt, task.id)
    rt.close_session(session.id)
    closed = rt.get_task(task.id)
    assert closed.status == TaskStatus.CANCELLED and closed.error == SESSION_CLOSED_RUNNING
    assert closed.awaiting_approval is None
    expired = rt.get_approval(approval.id)
    assert (expired.status, expired.decided_by) == (ApprovalStatus.EXPIRED, "system")


def test_a_shutdown_does_not_wait_its_grace_for_a_person(rt, session):
    task = rt.submit(session.id, "[[ask]]")
    approval = pending_of(rt, task.id)
    began = time.monotonic()
    rt.shutdown(grace=30)
    assert time.monotonic() - began < 15
    ended = rt.store.get_task(task.id)
    assert ended.status == TaskStatus.CANCELLED and ended.error == SERVER_SHUTDOWN
    assert ended.awaiting_approval is None
    expired = rt.store.approvals.get(approval.id)
    assert (expired.status, expired.decided_by) == (ApprovalStatus.EXPIRED, "system")


def test_a_decision_after_the_task_ended_is_refused(rt, scripted, session, workdir):
    task = rt.submit(session.id, "[[ask]]")
    approval = pending_of(rt, task.id)
    rt.cancel(task.id)
    with pytest.raises(ApprovalDecided) as caught:
        rt.decide(approval.id, "allow")
    assert caught.value.code == "approval_decided"
    assert caught.value.details["status"] == "expired"
    assert caught.value.details["decided_by"] == "system"
    assert rt.get_approval(approval.id).status == ApprovalStatus.EXPIRED
    assert answers(scripted, workdir) == []


def test_a_remembered_allow_answers_the_same_request_later_in_the_session(
    rt, scripted, session, workdir
):
    first = rt.submit(session.id, "[[ask]] first")
    approval = pending_of(rt, first.id)
    rt.decide(approval.id, "allow", remember=True)
    assert rt.wait(first.id, timeout=10).status == TaskStatus.COMPLETED
    (rule,) = rt.get_session(session.id).approval_rules
    assert (rule.tool_name, rule.input, rule.approval_id) == ("Bash", BASH, approval.id)

    second = rt.submit(session.id, "[[ask]] second")  # nobody decides this one
    done = rt.wait(second.id, timeout=10)
    assert done.status == TaskStatus.COMPLETED and done.awaiting_approval is None
    by_rule = only_approval(rt, second.id)
    assert (by_rule.status, by_rule.decided_by) == (ApprovalStatus.ALLOWED, "rule")
    assert answers(scripted, workdir) == [ALLOWED, ALLOWED]
    types = event_types(rt, second.id)
    assert types.index("approval_requested") < types.index("approval_decided")


def test_a_remembered_allow_is_its_sessions_own(rt, scripted, session, tmp_path_factory):
    first = rt.submit(session.id, "[[ask]]")
    rt.decide(pending_of(rt, first.id).id, "allow", remember=True)
    assert rt.wait(first.id, timeout=10).status == TaskStatus.COMPLETED
    elsewhere = str(tmp_path_factory.mktemp("other"))
    other = rt.open_session(workdir=elsewhere, approvals="ask")
    asked = rt.submit(other.id, "[[ask]]")
    approval = pending_of(rt, asked.id)  # the same request, asked again: a person decides
    assert approval.input == BASH and answers(scripted, elsewhere) == []
    rt.decide(approval.id, "deny")
    assert rt.wait(asked.id, timeout=10).status == TaskStatus.COMPLETED
    assert rt.get_session(other.id).approval_rules == ()


def test_the_events_tell_the_request_and_the_decision_before_the_end(rt, session):
    task = rt.submit(session.id, "[[ask]]")
    approval = pending_of(rt, task.id)
    rt.decide(approval.id, "deny", message="no")
    rt.wait(task.id, timeout=10)
    events = rt.events(task.id)
    types = [event.type for event in events]
    assert types.count("approval_requested") == types.count("approval_decided") == 1
    requested, decided = types.index("approval_requested"), types.index("approval_decided")
    statuses = [i for i, kind in enumerate(types) if kind == "status"]
    assert statuses[-1] == len(types) - 1  # the final status is the last event
    assert events[statuses[-1]].data["status"] == TaskStatus.COMPLETED
    assert events[statuses[-2]].data["status"] == TaskStatus.RUNNING
    assert statuses[-2] < requested < decided < statuses[-1]
    assert events[requested].data["approval"]["status"] == "pending"
    assert events[decided].data["approval"]["id"] == approval.id
    assert events[decided].data["approval"]["status"] == "denied"


def test_a_decision_that_arrives_past_the_lease_deadline_continues_nothing(
    rt, scripted, session, workdir
):
    """A server that wakes up past its fence's deadline (it was stopped) may find a
    decision waiting for its actor: the turn is not continued, the CLI told nothing."""
    task = rt.submit(session.id, "[[ask]]")
    approval = pending_of(rt, task.id)
    node = rt.lease.node
    assert rt.lease.set(node, time.monotonic() - 1)  # the deadline passed while it slept
    rt.decide(approval.id, "allow")
    wait_for(lambda: not rt.census, 10, "the session's process to be killed")
    assert answers(scripted, workdir) == []
    assert rt.get_task(task.id).status == TaskStatus.RUNNING  # nothing written for it
