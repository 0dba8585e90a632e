"""``Store.approvals`` on SQLite and PostgreSQL: what a request, a decision and a task's end commit.

The approval, the task's ``awaiting_approval`` and the task's events move together
in one transaction, and ``UPDATE ... WHERE status = 'pending'`` settles every race
(a person, the timeout, the task's end): these tests hold the store to that without
any actor, so a regression shows here before it shows as a stuck turn.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import falcon
import pytest

from aicli.contract import (
    Approval,
    ApprovalKind,
    ApprovalRule,
    ApprovalStatus,
    Session,
    Task,
    TaskStatus,
    utcnow,
)
from aicli.errors import (
    ApprovalDecided,
    ApprovalNotFound,
    Conflict,
    IllegalTransition,
    InvalidRequest,
)
from aicli.http.errors import handle_domain_error
from aicli.storage import Store
from aicli.storage.approvals import MAX_RULES
from aicli.testing.store_sql import submit_task
from tests.pages import walk_pages

pytest_plugins = ("tests.storage_fixtures",)

BASH = {"command": "echo hi > hi.txt", "description": "Write a file"}


def _running(store: Store, workdir: Path, owner: str | None = None) -> tuple[Session, Task]:
    session = store.create_session(workdir=str(workdir), owner=owner, approvals="ask")
    submit_task(store, session.id, command="do it")
    task = store.start_next_task(session.id)
    assert task is not None and task.status == TaskStatus.RUNNING
    return session, task


def _ask(
    store: Store, task: Task, given: dict[str, Any] | None = None, *, rule: bool = False
) -> Approval:
    return store.approvals.request(
        session_id=task.session_id,
        task_id=task.id,
        kind=ApprovalKind.TOOL,
        tool_name="Bash",
        given=dict(BASH if given is None else given),
        suggestions=[{"type": "addRules"}],
        rule=rule,
    )


def _rule(approval: Approval) -> ApprovalRule:
    return ApprovalRule(
        tool_name=approval.tool_name,
        input=approval.input,
        approval_id=approval.id,
        created_at=utcnow(),
    )


def _types(store: Store, task_id: str) -> list[str]:
    return [event.type for event in store.list_events(task_id)]


def _approval_events(store: Store, task_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (event.type, event.data["approval"])
        for event in store.list_events(task_id)
        if event.type.startswith("approval_")
    ]


@pytest.fixture
def running(store: Store, tmp_path: Path) -> tuple[Session, Task]:
    return _running(store, tmp_path)


# requests


def test_a_request_commits_a_pending_approval_the_task_waits_for_with_its_event(
    store: Store, running: tuple[Session, Task]
) -> None:
    session, task = running
    approval = _ask(store, task)
    assert approval.status == ApprovalStatus.PENDING
    assert (approval.session_id, approval.task_id) == (session.id, task.id)
    assert (approval.kind, approval.tool_name, approval.input) == ("tool", "Bash", BASH)
    assert approval.suggestions == [{"type": "addRules"}]
    assert approval.decided_at is None and approval.decided_by is None
    assert approval.message is None
    assert store.approvals.get(approval.id) == approval
    assert store.get_task(task.id).awaiting_approval == approval.id
    assert _types(store, task.id)[-1] == "approval_requested"
    ((kind, data),) = _approval_events(store, task.id)
    assert kind == "approval_requested"
    assert data["id"] == approval.id and data["status"] == "pending"
    assert data["input"] == BASH


def test_a_request_a_rule_allows_is_decided_by_the_rule_and_nobody_waits(
    store: Store, running: tuple[Session, Task]
) -> None:
    _, task = running
    approval = _ask(store, task, rule=True)
    assert approval.status == ApprovalStatus.ALLOWED
    assert approval.decided_by == "rule" and approval.decided_at is not None
    assert store.approvals.get(approval.id) == approval
    assert store.get_task(task.id).awaiting_approval is None
    events = _approval_events(store, task.id)
    assert [kind for kind, _ in events] == ["approval_requested", "approval_decided"]
    assert events[0][1]["status"] == "pending" and events[0][1]["decided_by"] is None
    assert events[1][1]["status"] == "allowed" and events[1][1]["decided_by"] == "rule"


@pytest.mark.parametrize("rule", [False, True])
def test_a_task_that_is_not_running_cannot_ask(store: Store, tmp_path: Path, rule: bool) -> None:
    session = store.create_session(workdir=str(tmp_path))
    pending, _ = submit_task(store, session.id, command="later")
    with pytest.raises(IllegalTransition):
        _ask(store, pending, rule=rule)
    _, done = _running(store, tmp_path)
    store.finish_task(done.id, TaskStatus.COMPLETED, output="ok")
    with pytest.raises(IllegalTransition):
        _ask(store, done, rule=rule)
    # Nothing of the refused requests was written.
    assert store.approvals.list().data == []
    assert "approval_requested" not in _types(store, pending.id) + _types(store, done.id)


# decisions


@pytest.mark.parametrize(
    ("status", "message"),
    [(ApprovalStatus.ALLOWED, None), (ApprovalStatus.DENIED, "not in my repo")],
)
def test_a_decision_moves_pending_to_its_status_and_the_task_stops_waiting(
    store: Store, running: tuple[Session, Task], status: ApprovalStatus, message: str | None
) -> None:
    _, task = running
    approval = _ask(store, task)
    before = utcnow()
    decided = store.approvals.decide(approval.id, status, "alice", message)
    assert decided.status == status
    assert (decided.decided_by, decided.message) == ("alice", message)
    assert decided.decided_at is not None and decided.decided_at >= before
    assert decided.created_at == approval.created_at and decided.input == approval.input
    assert store.approvals.get(approval.id) == decided
    assert store.get_task(task.id).awaiting_approval is None
    assert _types(store, task.id)[-2:] == ["approval_requested", "approval_decided"]
    kind, data = _approval_events(store, task.id)[-1]
    assert (kind, data["id"], data["status"]) == ("approval_decided", approval.id, status)
    assert (data["decided_by"], data["message"]) == ("alice", message)


def test_with_two_pending_a_decision_points_the_task_at_the_one_left(
    store: Store, running: tuple[Session, Task]
) -> None:
    _, task = running
    first = _ask(store, task, {"command": "one"})
    second = _ask(store, task, {"command": "two"})
    store.approvals.decide(first.id, ApprovalStatus.ALLOWED, "alice")
    assert store.get_task(task.id).awaiting_approval == second.id
    store.approvals.decide(second.id, ApprovalStatus.DENIED, "alice", "no")
    assert store.get_task(task.id).awaiting_approval is None


def test_with_two_pending_deciding_the_newer_points_the_task_at_the_older(
    store: Store, running: tuple[Session, Task]
) -> None:
    _, task = running
    first = _ask(store, task, {"command": "one"})
    second = _ask(store, task, {"command": "two"})
    store.approvals.decide(second.id, ApprovalStatus.ALLOWED, "alice")
    assert store.get_task(task.id).awaiting_approval == first.id


def test_with_two_pending_the_task_waits_for_the_oldest_as_after_any_decision(
    store: Store, running: tuple[Session, Task]
) -> None:
    _, task = running
    first = _ask(store, task, {"command": "one"})
    _ask(store, task, {"command": "two"})
    assert store.get_task(task.id).awaiting_approval == first.id


def test_a_rule_allowed_request_leaves_the_task_waiting_for_the_one_still_pending(
    store: Store, running: tuple[Session, Task]
) -> None:
    _, task = running
    pending = _ask(store, task, {"command": "one"})
    _ask(store, task, {"command": "two"}, rule=True)
    assert store.approvals.get(pending.id).status == ApprovalStatus.PENDING
    assert store.get_task(task.id).awaiting_approval == pending.id


def test_deciding_twice_is_a_409_approval_decided_naming_the_first_decision(
    store: Store, running: tuple[Session, Task]
) -> None:
    _, task = running
    approval = _ask(store, task)
    first = store.approvals.decide(approval.id, ApprovalStatus.DENIED, "alice", "no")
    with pytest.raises(ApprovalDecided) as caught:
        store.approvals.decide(approval.id, ApprovalStatus.ALLOWED, "bob")
    error = caught.value
    assert isinstance(error, Conflict) and error.code == "approval_decided"
    assert error.details == {"approval_id": approval.id, "status": "denied", "decided_by": "alice"}
    resp = falcon.Response()
    handle_domain_error(None, resp, error, {})  # type: ignore[arg-type]
    assert resp.status in (falcon.HTTP_409, 409)
    # The loser changed nothing: the first decision stands with its one event.
    assert store.approvals.get(approval.id) == first
    assert _types(store, task.id).count("approval_decided") == 1


def test_a_rule_decision_cannot_be_decided_again(
    store: Store, running: tuple[Session, Task]
) -> None:
    _, task = running
    approval = _ask(store, task, rule=True)
    with pytest.raises(ApprovalDecided) as caught:
        store.approvals.decide(approval.id, ApprovalStatus.DENIED, "alice")
    assert caught.value.details["decided_by"] == "rule"


def test_unknown_approval_ids_are_not_found(store: Store) -> None:
    with pytest.raises(ApprovalNotFound):
        store.approvals.decide("nope", ApprovalStatus.ALLOWED, "alice")
    with pytest.raises(ApprovalNotFound):
        store.approvals.get("nope")
    with pytest.raises(ApprovalNotFound):
        store.approvals.owner("nope")


def test_a_remembered_rule_joins_the_session_once_per_tool_and_input(
    store: Store, running: tuple[Session, Task]
) -> None:
    session, task = running
    assert store.get_session(session.id).approval_rules == ()
    first = _ask(store, task)
    rule = ApprovalRule(
        tool_name="Bash", input=first.input, approval_id=first.id, created_at=utcnow()
    )
    store.approvals.decide(first.id, ApprovalStatus.ALLOWED, "alice", rule=rule)
    assert store.get_session(session.id).approval_rules == (rule,)
    # The same tool and input again (another approval, another time): still one rule.
    again = _ask(store, task)
    same = ApprovalRule(
        tool_name="Bash", input=dict(BASH), approval_id=again.id, created_at=utcnow()
    )
    store.approvals.decide(again.id, ApprovalStatus.ALLOWED, "alice", rule=same)
    assert store.get_session(session.id).approval_rules == (rule,)
    # Another input is another rule, kept after the first.
    other = _ask(store, task, {"command": "ls"})
    different = ApprovalRule(
        tool_name="Bash", input={"command": "ls"}, approval_id=other.id, created_at=utcnow()
    )
    store.approvals.decide(other.id, ApprovalStatus.ALLOWED, "alice", rule=different)
    assert store.get_session(session.id).approval_rules == (rule, different)


def test_a_rule_goes_only_with_a_decision_that_won(
    store: Store, running: tuple[Session, Task]
) -> None:
    session, task = running
    approval = _ask(store, task)
    store.approvals.decide(approval.id, ApprovalStatus.DENIED, "alice", "no")
    rule = ApprovalRule(
        tool_name="Bash", input=approval.input, approval_id=approval.id, created_at=utcnow()
    )
    with pytest.raises(ApprovalDecided):
        store.approvals.decide(approval.id, ApprovalStatus.ALLOWED, "bob", rule=rule)
    assert store.get_session(session.id).approval_rules == ()


def test_of_many_threads_deciding_at_once_exactly_one_wins(
    store: Store, running: tuple[Session, Task]
) -> None:
    _, task = running
    approval = _ask(store, task)
    count = 8
    barrier = threading.Barrier(count)
    won: list[Approval] = []
    lost: list[ApprovalDecided] = []
    other: list[BaseException] = []
    lock = threading.Lock()

    def decide(index: int) -> None:
        status = ApprovalStatus.ALLOWED if index % 2 else ApprovalStatus.DENIED
        barrier.wait(timeout=10)
        try:
            result = store.approvals.decide(approval.id, status, f"person-{index}")
        except ApprovalDecided as exc:
            with lock:
                lost.append(exc)
        except BaseException as exc:  # anything else is a failure of the test
            with lock:
                other.append(exc)
        else:
            with lock:
                won.append(result)

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert other == []
    assert len(won) == 1 and len(lost) == count - 1
    (winner,) = won
    assert store.approvals.get(approval.id) == winner
    assert all(exc.details["decided_by"] == winner.decided_by for exc in lost)
    decided = [
        data for kind, data in _approval_events(store, task.id) if kind == "approval_decided"
    ]
    assert [data["decided_by"] for data in decided] == [winner.decided_by]
    assert store.get_task(task.id).awaiting_approval is None


def test_a_person_and_the_end_of_the_task_race_and_exactly_one_decides(
    store: Store, running: tuple[Session, Task]
) -> None:
    _, task = running
    approval = _ask(store, task)
    barrier = threading.Barrier(2)
    results: dict[str, Any] = {}

    def person() -> None:
        barrier.wait(timeout=10)
        try:
            results["person"] = store.approvals.decide(approval.id, ApprovalStatus.ALLOWED, "ann")
        except ApprovalDecided as exc:
            results["person"] = exc

    def end() -> None:
        barrier.wait(timeout=10)
        results["end"] = store.finish_task(task.id, TaskStatus.CANCELLED, error="x")

    threads = [threading.Thread(target=person), threading.Thread(target=end)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    final = store.approvals.get(approval.id)
    decided = [
        data for kind, data in _approval_events(store, task.id) if kind == "approval_decided"
    ]
    assert len(decided) == 1 and decided[0]["status"] == final.status
    if isinstance(results["person"], ApprovalDecided):
        assert (final.status, final.decided_by) == ("expired", "system")
    else:
        assert (final.status, final.decided_by) == ("allowed", "ann")
    assert results["end"].status == TaskStatus.CANCELLED
    assert store.get_task(task.id).awaiting_approval is None


# the task's end


@pytest.mark.parametrize("status", [TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED])
def test_the_end_of_a_task_that_asked_expires_its_pending_approvals_in_the_same_commit(
    store: Store, running: tuple[Session, Task], status: str
) -> None:
    _, task = running
    allowed = _ask(store, task, {"command": "one"})
    store.approvals.decide(allowed.id, ApprovalStatus.ALLOWED, "alice")
    left = [_ask(store, task, {"command": "two"}), _ask(store, task, {"command": "three"})]
    assert store.get_task(task.id).awaiting_approval is not None
    seen = len(store.list_events(task.id))
    error = None if status == TaskStatus.COMPLETED else "stop"
    ended = store.finish_task(task.id, status, error=error)
    assert ended.awaiting_approval is None
    assert store.get_task(task.id).awaiting_approval is None
    for approval in left:
        expired = store.approvals.get(approval.id)
        assert (expired.status, expired.decided_by) == ("expired", "system")
        assert expired.decided_at is not None and status in (expired.message or "")
    # The decision made before the end stands.
    assert store.approvals.get(allowed.id).status == ApprovalStatus.ALLOWED
    tail = store.list_events(task.id)[seen:]
    assert [event.type for event in tail] == ["approval_decided", "approval_decided", "status"]
    assert {event.data["approval"]["id"] for event in tail[:2]} == {a.id for a in left}
    assert tail[-1].data["status"] == status
    assert all(e.data["approval"]["status"] == "expired" for e in tail[:2])


def test_the_end_of_a_task_writes_its_events_then_the_expiries_then_its_status(
    store: Store, running: tuple[Session, Task]
) -> None:
    _, task = running
    _ask(store, task)
    store.finish_task(task.id, TaskStatus.COMPLETED, output="ok", events=[("result", {"r": 1})])
    assert _types(store, task.id)[-4:] == [
        "approval_requested",
        "result",
        "approval_decided",
        "status",
    ]


def test_a_pending_approval_is_decided_by_the_system_only_once(
    store: Store, running: tuple[Session, Task]
) -> None:
    _, task = running
    approval = _ask(store, task)
    store.finish_task(task.id, TaskStatus.CANCELLED, error="x")
    with pytest.raises(ApprovalDecided) as caught:
        store.approvals.decide(approval.id, ApprovalStatus.ALLOWED, "late")
    assert caught.value.details == {
        "approval_id": approval.id,
        "status": "expired",
        "decided_by": "system",
    }


def test_the_restart_rule_fails_running_tasks_and_expires_what_they_waited_for(
    store: Store, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, waiting = _running(store, tmp_path / "a")
    second, quiet = _running(store, tmp_path / "b")
    approval = _ask(store, waiting)
    me = store.nodes.join(None, 60)
    # Both ran with no claim (as before nodes): no live node runs them.
    assert sorted(store.ownership.rescue(me.id)) == sorted([first.id, second.id])
    task = store.get_task(waiting.id)
    assert (task.status, task.awaiting_approval) == (TaskStatus.FAILED, None)
    expired = store.approvals.get(approval.id)
    assert (expired.status, expired.decided_by) == ("expired", "system")
    assert _types(store, waiting.id)[-3:] == ["approval_requested", "approval_decided", "status"]
    assert _types(store, quiet.id)[-1] == "status"
    assert "approval_decided" not in _types(store, quiet.id)


# reading


@pytest.fixture
def many(store: Store, tmp_path: Path) -> dict[str, Any]:
    """Two owners' sessions, three tasks, approvals in every status."""
    for name in ("a1", "a2", "b1"):
        (tmp_path / name).mkdir()
    alice1, t1 = _running(store, tmp_path / "a1", owner="alice")
    alice2, t2 = _running(store, tmp_path / "a2", owner="alice")
    bob, t3 = _running(store, tmp_path / "b1", owner="bob")
    made: list[Approval] = []
    for task, n in ((t1, 7), (t2, 4), (t3, 5)):
        for i in range(n):
            made.append(_ask(store, task, {"command": f"{task.id}-{i}"}, rule=i == 3))
    for index, approval in enumerate(made):
        if approval.status == ApprovalStatus.PENDING and index % 3 == 1:
            store.approvals.decide(approval.id, ApprovalStatus.DENIED, "alice", "no")
        elif approval.status == ApprovalStatus.PENDING and index % 3 == 2:
            store.approvals.decide(approval.id, ApprovalStatus.ALLOWED, "alice")
    store.finish_task(t2.id, TaskStatus.CANCELLED, error="x")
    every = [store.approvals.get(approval.id) for approval in made]
    return {
        "sessions": (alice1, alice2, bob),
        "tasks": (t1, t2, t3),
        "every": every,
    }


def _walk(store: Store, limit: int, order: str, **filters: Any) -> list[Approval]:
    seen: list[Approval] = []
    for page in walk_pages(
        lambda cursor: store.approvals.list(limit=limit, cursor=cursor, order=order, **filters),
        limit,
    ):
        seen.extend(page.data)
    return seen


def _ordered(items: list[Approval], order: str) -> list[Approval]:
    return sorted(items, key=lambda a: (a.created_at, a.id), reverse=order == "desc")


@pytest.mark.parametrize("order", ["desc", "asc"])
@pytest.mark.parametrize("limit", [1, 3, 16, 200])
def test_pages_walk_every_approval_once_in_either_order(
    store: Store, many: dict[str, Any], order: str, limit: int
) -> None:
    every = many["every"]
    walked = _walk(store, limit, order)
    assert len({a.id for a in walked}) == len(walked) == len(every)
    assert walked == _ordered(every, order)


def test_the_default_page_is_newest_first(store: Store, many: dict[str, Any]) -> None:
    page = store.approvals.list()
    assert page.data == _ordered(many["every"], "desc") and not page.has_more


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_filters_combine_with_paging(store: Store, many: dict[str, Any], order: str) -> None:
    every: list[Approval] = many["every"]
    alice1, alice2, bob = many["sessions"]
    t1, t2, t3 = many["tasks"]
    owners = {alice1.id: "alice", alice2.id: "alice", bob.id: "bob"}
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"session_id": alice1.id}, lambda a: a.session_id == alice1.id),
        ({"task_id": t3.id}, lambda a: a.task_id == t3.id),
        ({"status": ["pending"]}, lambda a: a.status == "pending"),
        ({"status": ["allowed", "expired"]}, lambda a: a.status in ("allowed", "expired")),
        ({"owner": "alice"}, lambda a: owners[a.session_id] == "alice"),
        ({"owner": "nobody"}, lambda a: False),
        (
            {"owner": "alice", "status": ["denied", "allowed"]},
            lambda a: owners[a.session_id] == "alice" and a.status in ("denied", "allowed"),
        ),
        ({"session_id": bob.id, "owner": "alice"}, lambda a: False),
        (
            {"session_id": alice2.id, "task_id": t2.id, "status": ["expired"]},
            lambda a: a.task_id == t2.id and a.status == "expired",
        ),
        (
            {"task_id": t1.id, "status": ["pending", "denied"]},
            lambda a: a.task_id == t1.id and a.status in ("pending", "denied"),
        ),
    ]
    for filters, keep in cases:
        expected = _ordered([a for a in every if keep(a)], order)
        assert _walk(store, 2, order, **filters) == expected, filters
    # Every status is present, so the status filters above did filter something.
    assert {a.status for a in every} == set(ApprovalStatus)
    assert {a.decided_by for a in every} == {None, "alice", "rule", "system"}


def test_an_unknown_status_filter_is_refused(store: Store) -> None:
    with pytest.raises(InvalidRequest) as caught:
        store.approvals.list(status=["pending", "maybe"])
    assert caught.value.details == {"field": "status"}


def test_an_empty_status_filter_is_refused_as_for_tasks(store: Store) -> None:
    with pytest.raises(InvalidRequest) as caught:
        store.approvals.list(status=[])
    assert caught.value.details == {"field": "status"}


def test_owner_names_the_session_and_its_owner(store: Store, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    owned, task = _running(store, tmp_path / "a", owner="alice")
    anonymous, other = _running(store, tmp_path / "b")
    assert store.approvals.owner(_ask(store, task).id) == (owned.id, "alice")
    assert store.approvals.owner(_ask(store, other).id) == (anonymous.id, None)


def test_a_session_remembers_at_most_max_rules_and_a_refused_rule_decides_nothing(
    store: Store, running: tuple[Session, Task]
) -> None:
    session, task = running
    for n in range(MAX_RULES):
        approval = _ask(store, task, {"command": f"echo {n} > n.txt"})
        store.approvals.decide(approval.id, ApprovalStatus.ALLOWED, "alice", rule=_rule(approval))
    over = _ask(store, task, {"command": "echo over > n.txt"})
    with pytest.raises(InvalidRequest) as caught:
        store.approvals.decide(over.id, ApprovalStatus.ALLOWED, "alice", rule=_rule(over))
    assert caught.value.details["field"] == "remember"
    assert store.approvals.get(over.id).status == ApprovalStatus.PENDING  # rolled back
    assert len(store.get_session(session.id).approval_rules) == MAX_RULES


def test_a_rule_allows_the_same_use_whatever_its_description_says() -> None:
    rule = ApprovalRule(tool_name="Bash", input=BASH, approval_id="a", created_at=utcnow())
    assert rule.allows("Bash", {**BASH, "description": "Put hi in a file"})
    assert rule.allows("Bash", {"command": BASH["command"]})
    assert not rule.allows("Bash", {**BASH, "command": "echo hi > hi.txt; rm -rf ~"})
    assert not rule.allows("Write", BASH)


def test_what_a_person_changed_is_kept_in_the_decision_event(
    store: Store, running: tuple[Session, Task]
) -> None:
    _, task = running
    approval = _ask(store, task)
    changed = {"command": "echo changed > hi.txt"}
    store.approvals.decide(
        approval.id, ApprovalStatus.ALLOWED, "alice", decided={"updated_input": changed}
    )
    [event] = [e for e in store.list_events(task.id) if e.type == "approval_decided"]
    assert event.data["updated_input"] == changed
    assert event.data["approval"]["input"] == BASH  # what Claude asked for
