"""The store as each session's queue: it decides what runs next, on SQLite and on PostgreSQL.

A session's tasks run one at a time in the order the session accepted them:
their ``seq``, handed out under the session's row lock, never a clock reading.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from aicli.contract import Session, Task, TaskStatus
from aicli.errors import (
    AicliError,
    IllegalTransition,
    LimitExceeded,
    SessionClosed,
    SessionNotFound,
    TaskNotFound,
)
from aicli.storage import Store, migrations, open_store, task_outcomes, task_queue
from aicli.storage import database as storage_database
from aicli.storage import events as events_module
from aicli.storage.engine import Engine
from aicli.storage.fields import to_db_time
from aicli.storage.ownership import lost_node_error
from aicli.testing import store_sql
from aicli.testing.store_sql import submit_task
from tests import store_reads
from tests.store_reads import count_tasks, last_event_seq, schema_version

pytest_plugins = ("tests.storage_fixtures",)

T = TypeVar("T")
QueueNumbers = Callable[[Store | Engine, str], dict[str, int | None]]
LastSeq = Callable[[Store | Engine, str], int]


@pytest.fixture
def session(store: Store, tmp_path: Path) -> Session:
    return store.create_session(workdir=str(tmp_path))


def _submit(store: Store, session_id: str, count: int, **fields: Any) -> list[Task]:
    return [
        submit_task(store, session_id=session_id, command=f"c{i}", **fields)[0]
        for i in range(count)
    ]


def _run_queue(store: Store, session_id: str) -> list[str]:
    """Start and finish the session's tasks until none is left: their ids in start order."""
    ran = []
    while (task := store.start_next_task(session_id)) is not None:
        assert store.start_next_task(session_id) is None  # one at a time
        ran.append(task.id)
        store.finish_task(task.id, TaskStatus.COMPLETED, output="ok")
    return ran


def _counters_match_tasks(store: Store, session_id: str) -> None:
    counted = {
        status: count_tasks(store, session_id=session_id, statuses=[status])
        for status in tuple(TaskStatus)
    }
    assert msgspec.structs.asdict(store.get_session(session_id).task_counts) == counted


def _race(actions: list[Callable[[], T]], timeout: float = 60) -> list[T | AicliError]:
    """Run ``actions`` in threads released at once; each one's result or refusal, in order."""
    gate = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)
    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            gate.wait()
            results[index] = actions[index]()
        except AicliError as exc:
            results[index] = exc
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            failures.append(exc)

    threads = [
        threading.Thread(target=functools.partial(run, i), daemon=True) for i in range(len(actions))
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "threads hung"
    if failures:
        raise failures[0]
    return results


# the order: seq, not the clock


def _frozen_clock() -> Iterator[datetime]:
    return itertools.repeat(datetime(2026, 1, 1, tzinfo=UTC))


def _backwards_clock() -> Iterator[datetime]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return (start - timedelta(seconds=n) for n in itertools.count())


CLOCKS = {"tied": _frozen_clock, "backwards": _backwards_clock}


def _set_clock(monkeypatch: pytest.MonkeyPatch, ticks: Iterator[datetime]) -> None:
    """The store's clock, wherever a task is accepted, started, told of or ended."""
    for module in (task_queue, task_outcomes, events_module):
        monkeypatch.setattr(module, "utcnow", lambda: next(ticks))


@pytest.mark.parametrize("clock", list(CLOCKS))
def test_seq_is_acceptance_order_whatever_the_clock_says(
    store: Store,
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
    queue_numbers: QueueNumbers,
    last_seq: LastSeq,
    clock: str,
) -> None:
    ticks = CLOCKS[clock]()
    _set_clock(monkeypatch, ticks)
    made = _submit(store, session.id, 6)
    assert [t.queue_position for t in made] == list(range(6))
    ids = [t.id for t in made]
    if clock == "backwards":
        assert [t.created_at for t in made] == sorted((t.created_at for t in made), reverse=True)
    assert queue_numbers(store, session.id) == {task_id: n for n, task_id in enumerate(ids, 1)}
    assert last_seq(store, session.id) == 6
    assert store.pending_task_ids(session.id) == ids
    assert _run_queue(store, session.id) == ids


def test_pending_tasks_of_a_session_are_in_queue_order_when_the_clock_steps_back(
    store: Store, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = _backwards_clock()
    _set_clock(monkeypatch, ticks)
    made = _submit(store, session.id, 3)
    assert [t.id for t in store_reads.pending_tasks(store, session.id)] == [t.id for t in made]


def test_queue_positions_count_the_pending_tasks_ahead(store: Store, session: Session) -> None:
    first, second = _submit(store, session.id, 2)
    assert (first.queue_position, second.queue_position) == (0, 1)
    assert store.start_next_task(session.id).id == first.id
    # The running task is out of the queue: the next one waits only behind the second.
    (third,) = _submit(store, session.id, 1)
    assert third.queue_position == 1
    store.cancel_pending(second.id, "no")
    (fourth,) = _submit(store, session.id, 1)
    assert fourth.queue_position == 1
    assert store.pending_task_ids(session.id) == [third.id, fourth.id]


def test_each_session_numbers_its_own_queue(
    store: Store, tmp_path: Path, queue_numbers: QueueNumbers, last_seq: LastSeq
) -> None:
    one = store.create_session(workdir=str(tmp_path))
    two = store.create_session(workdir=str(tmp_path))
    assert last_seq(store, one.id) == 0
    a1, b1, a2, b2, a3 = (
        submit_task(store, session_id=s.id, command="c")[0] for s in (one, two, one, two, one)
    )
    assert queue_numbers(store, one.id) == {a1.id: 1, a2.id: 2, a3.id: 3}
    assert queue_numbers(store, two.id) == {b1.id: 1, b2.id: 2}
    assert (last_seq(store, one.id), last_seq(store, two.id)) == (3, 2)
    assert _run_queue(store, two.id) == [b1.id, b2.id]
    assert _run_queue(store, one.id) == [a1.id, a2.id, a3.id]


def test_a_refused_submission_takes_no_place_in_the_queue(
    store: Store, session: Session, last_seq: LastSeq
) -> None:
    _submit(store, session.id, 2, max_pending=2)
    with pytest.raises(LimitExceeded):
        submit_task(store, session_id=session.id, command="c", max_pending=2)
    assert last_seq(store, session.id) == 2
    store.close_session(session.id, "bye")
    with pytest.raises(SessionClosed):
        submit_task(store, session_id=session.id, command="c")
    assert last_seq(store, session.id) == 2


# start_next_task


def test_start_next_task_takes_the_lowest_pending_seq_skipping_cancelled_ones(
    store: Store, session: Session
) -> None:
    a, b, c, d = _submit(store, session.id, 4)
    assert store.cancel_pending(a.id, "not wanted") is not None
    store.finish_task(c.id, TaskStatus.CANCELLED)
    started = store.start_next_task(session.id)
    assert started is not None and started.id == b.id
    assert (started.status, started.session_id, started.command) == (
        TaskStatus.RUNNING,
        session.id,
        "c1",
    )
    assert started.started_at is not None and started.completed_at is None
    assert store.get_task(b.id) == started
    assert [e.data for e in store.list_events(b.id)] == [
        {"status": TaskStatus.PENDING},
        {"status": TaskStatus.RUNNING},
    ]
    store.finish_task(b.id, TaskStatus.COMPLETED)
    assert _run_queue(store, session.id) == [d.id]
    assert store.start_next_task(session.id) is None


def test_start_next_task_refuses_while_a_task_runs(store: Store, session: Session) -> None:
    first, second, third = _submit(store, session.id, 3)
    assert store.start_next_task(session.id).id == first.id
    for _ in range(3):
        assert store.start_next_task(session.id) is None
    assert store.pending_task_ids(session.id) == [second.id, third.id]
    assert store.get_task(second.id).status == TaskStatus.PENDING
    assert last_event_seq(store, second.id) == 1
    # However the running task ends, the next one may start.
    store.finish_task(first.id, TaskStatus.CANCELLED, error="interrupted")
    assert store.start_next_task(session.id).id == second.id
    store.finish_task(second.id, TaskStatus.FAILED, error="boom")
    assert store.start_next_task(session.id).id == third.id
    _counters_match_tasks(store, session.id)


def test_start_next_task_on_an_empty_closed_or_unknown_session(
    store: Store, tmp_path: Path
) -> None:
    empty = store.create_session(workdir=str(tmp_path))
    assert store.start_next_task(empty.id) is None
    assert store.get_session(empty.id).status == "idle"
    with pytest.raises(SessionNotFound):
        store.start_next_task("nope")
    # Closed by close_session: its pending tasks went with it.
    closed = store.create_session(workdir=str(tmp_path))
    _submit(store, closed.id, 2)
    store.close_session(closed.id, "bye")
    assert store.start_next_task(closed.id) is None
    # Closed by a bare status update: its tasks are still pending, and still do not start.
    marked = store.create_session(workdir=str(tmp_path))
    (left,) = _submit(store, marked.id, 1)
    store_sql.set_session_status(store, marked.id, "closed")
    assert store.start_next_task(marked.id) is None
    assert store.get_task(left.id).status == TaskStatus.PENDING
    assert store.get_session(marked.id).status == "closed"


# the session's status follows its queue


def test_session_status_moves_busy_and_idle_with_its_running_task(
    store: Store, session: Session
) -> None:
    assert store.get_session(session.id).status == "idle"
    first, second = _submit(store, session.id, 2)
    assert store.get_session(session.id).status == "idle"  # pending work is not busy
    before = store.get_session(session.id)
    started = store.start_next_task(session.id)
    busy = store.get_session(session.id)
    assert busy.status == "busy"
    assert busy.last_active_at == started.started_at
    assert busy.updated_at >= before.updated_at
    # Cancelling a pending task leaves a busy session busy.
    store.cancel_pending(second.id, "no")
    assert store.get_session(session.id).status == "busy"
    done = store.finish_task(first.id, TaskStatus.COMPLETED, cost_usd=0.5)
    idle = store.get_session(session.id)
    assert idle.status == "idle"
    assert idle.last_active_at == done.completed_at
    assert idle.total_cost_usd == pytest.approx(0.5)
    # A failure ends in idle too.
    (third,) = _submit(store, session.id, 1)
    store.start_next_task(session.id)
    store.finish_task(third.id, TaskStatus.FAILED, error="boom")
    assert store.get_session(session.id).status == "idle"
    # And a closed session stays closed when its running task ends.
    (fourth,) = _submit(store, session.id, 1)
    store.start_next_task(session.id)
    store.close_session(session.id, "bye")
    store.finish_task(fourth.id, TaskStatus.CANCELLED, error="closed")
    closed = store.get_session(session.id)
    assert closed.status == "closed"
    assert msgspec.structs.asdict(closed.task_counts) == {
        TaskStatus.PENDING: 0,
        TaskStatus.RUNNING: 0,
        TaskStatus.COMPLETED: 1,
        TaskStatus.FAILED: 1,
        TaskStatus.CANCELLED: 2,
    }


# finish_task and cancel_pending


def test_finish_task_writes_its_events_the_move_and_the_status_event_together(
    store: Store, session: Session
) -> None:
    task, _ = submit_task(store, session_id=session.id, command="c")
    store.start_next_task(session.id)
    done = store.finish_task(
        task.id,
        TaskStatus.FAILED,
        error="boom",
        events=[("assistant", {"text": "trying"}), ("result", {"is_error": True})],
    )
    assert done.error == "boom"
    assert [(e.seq, e.type, e.data) for e in store.list_events(task.id)] == [
        (1, "status", {"status": TaskStatus.PENDING}),
        (2, "status", {"status": TaskStatus.RUNNING}),
        (3, "assistant", {"text": "trying"}),
        (4, "result", {"is_error": True}),
        (5, "status", {"status": TaskStatus.FAILED, "error": "boom"}),
    ]
    # A refused finish writes none of its events.
    with pytest.raises(IllegalTransition):
        store.finish_task(task.id, TaskStatus.COMPLETED, events=[("late", {})])
    assert last_event_seq(store, task.id) == 5


def test_cancel_pending(store: Store, session: Session) -> None:
    first, second = _submit(store, session.id, 2)
    cancelled = store.cancel_pending(second.id, "client cancelled")
    assert cancelled is not None
    assert (cancelled.id, cancelled.status, cancelled.error) == (
        second.id,
        TaskStatus.CANCELLED,
        "client cancelled",
    )
    assert cancelled.completed_at is not None and cancelled.started_at is None
    assert store.get_task(second.id) == cancelled
    assert store.list_events(second.id)[-1].data == {
        "status": TaskStatus.CANCELLED,
        "error": "client cancelled",
    }
    assert store.cancel_pending(second.id, "again") is None  # no longer pending
    assert last_event_seq(store, second.id) == 2
    store.start_next_task(session.id)
    assert store.cancel_pending(first.id, "too late") is None  # running: the actor's to stop
    assert store.get_task(first.id).status == TaskStatus.RUNNING
    with pytest.raises(TaskNotFound):
        store.cancel_pending("nope", "x")
    counts = store.get_session(session.id).task_counts
    assert (
        counts.pending,
        counts.running,
        counts.cancelled,
    ) == (0, 1, 1)


def test_has_pending_and_unclaimed_sessions_with_pending(store: Store, tmp_path: Path) -> None:
    sessions = [store.create_session(workdir=str(tmp_path)) for _ in range(4)]
    assert store.ownership.unclaimed_with_pending() == []
    busy, waiting, done, closed = sessions
    _submit(store, busy.id, 2)
    _submit(store, waiting.id, 1)
    _submit(store, done.id, 1)
    _submit(store, closed.id, 1)
    store.start_next_task(busy.id)
    _run_queue(store, done.id)
    store.close_session(closed.id, "bye")
    assert [store.has_pending(s.id) for s in sessions] == [True, True, False, False]
    assert store.ownership.unclaimed_with_pending() == sorted([busy.id, waiting.id])


# max_pending


def test_max_pending_refuses_a_full_queue(store: Store, tmp_path: Path) -> None:
    session = store.create_session(workdir=str(tmp_path))
    made = _submit(store, session.id, 3, max_pending=3)
    assert [t.queue_position for t in made] == [0, 1, 2]
    with pytest.raises(LimitExceeded) as caught:
        submit_task(store, session_id=session.id, command="c", max_pending=3)
    refusal = caught.value
    assert refusal.retry_after == 1
    assert refusal.details == {"max_pending_per_session": 3}
    assert refusal.code == "too_many_requests"
    assert session.id in refusal.message
    assert count_tasks(store, session_id=session.id, statuses=[TaskStatus.PENDING]) == 3
    # A key already used still answers with its task, full queue or not.
    keyed = store.create_session(workdir=str(tmp_path))
    first, _ = submit_task(store, session_id=keyed.id, command="c", idempotency_key="k")
    again, created = submit_task(
        store, session_id=keyed.id, command="c", idempotency_key="k", max_pending=1
    )
    assert (again.id, created) == (first.id, False)
    with pytest.raises(LimitExceeded):
        submit_task(store, session_id=keyed.id, command="c", idempotency_key="k2", max_pending=1)
    # The running task has left the queue: there is room for one more.
    assert store.start_next_task(session.id).id == made[0].id
    (fourth,) = _submit(store, session.id, 1, max_pending=3)
    assert fourth.queue_position == 2
    with pytest.raises(LimitExceeded):
        submit_task(store, session_id=session.id, command="c", max_pending=3)
    # No limit, or another session's, is not this one.
    submit_task(store, session_id=session.id, command="c")
    other = store.create_session(workdir=str(tmp_path))
    _submit(store, other.id, 3, max_pending=3)
    # retry_after grows with the limit.
    roomy = store.create_session(workdir=str(tmp_path))
    _submit(store, roomy.id, 50)
    with pytest.raises(LimitExceeded) as caught:
        submit_task(store, session_id=roomy.id, command="c", max_pending=50)
    assert caught.value.retry_after == 5
    assert caught.value.details == {"max_pending_per_session": 50}
    # Closed or unknown is said before full.
    store.close_session(other.id, "bye")
    with pytest.raises(SessionClosed):
        submit_task(store, session_id=other.id, command="c", max_pending=0)
    with pytest.raises(SessionNotFound):
        submit_task(store, session_id="nope", command="c", max_pending=0)
    _counters_match_tasks(store, session.id)


def test_max_pending_holds_against_racing_submitters(store: Store, session: Session) -> None:
    LIMIT, SUBMITTERS = 5, 12
    results = _race(
        [
            functools.partial(
                submit_task, store, session_id=session.id, command=f"c{n}", max_pending=LIMIT
            )
            for n in range(SUBMITTERS)
        ]
    )
    accepted = [result for result in results if isinstance(result, tuple)]
    assert len(accepted) == LIMIT
    assert all(isinstance(result, LimitExceeded) for result in results if result not in accepted)
    assert sorted(task.queue_position for task, _ in accepted) == list(range(LIMIT))
    assert count_tasks(store, session_id=session.id, statuses=[TaskStatus.PENDING]) == LIMIT
    _counters_match_tasks(store, session.id)


# closing


def test_idempotency_key_after_close_returns_the_first_task(store: Store, session: Session) -> None:
    first, created = submit_task(store, session_id=session.id, command="c", idempotency_key="k")
    assert created
    cancelled, running = store.close_session(session.id, "closed")
    assert (cancelled, running) == ([first.id], None)
    again, created_again = submit_task(
        store, session_id=session.id, command="c", idempotency_key="k"
    )
    assert created_again is False
    assert again.id == first.id and again.command == "c"
    assert again.status == TaskStatus.CANCELLED  # what it became, not what it was
    for key in ("fresh", None):
        with pytest.raises(SessionClosed):
            submit_task(store, session_id=session.id, command="c", idempotency_key=key)
    assert count_tasks(store, session_id=session.id, statuses=tuple(TaskStatus)) == 1


def test_close_session_cancels_the_queue_and_names_the_running_task(
    store: Store, session: Session
) -> None:
    done, running, *waiting = _submit(store, session.id, 5)
    _run_queue_one = store.start_next_task(session.id)
    assert _run_queue_one.id == done.id
    store.finish_task(done.id, TaskStatus.COMPLETED, cost_usd=0.25)
    assert store.start_next_task(session.id).id == running.id
    cancelled, still_running = store.close_session(session.id, "The session was closed.")
    assert sorted(cancelled) == sorted(t.id for t in waiting)
    assert still_running == running.id
    closed = store.get_session(session.id)
    assert closed.status == "closed"
    assert msgspec.structs.asdict(closed.task_counts) == {
        TaskStatus.PENDING: 0,
        TaskStatus.RUNNING: 1,
        TaskStatus.COMPLETED: 1,
        TaskStatus.FAILED: 0,
        TaskStatus.CANCELLED: 3,
    }
    assert closed.total_cost_usd == pytest.approx(0.25)
    for task_id in cancelled:
        task = store.get_task(task_id)
        assert (task.status, task.error) == (TaskStatus.CANCELLED, "The session was closed.")
        assert task.completed_at is not None and task.started_at is None
        assert [e.data for e in store.list_events(task_id)] == [
            {"status": TaskStatus.PENDING},
            {"status": TaskStatus.CANCELLED, "error": "The session was closed."},
        ]
    assert store.pending_task_ids(session.id) == []
    assert not store.has_pending(session.id)
    # The running task is its actor's to stop; closing again changes nothing.
    assert store.get_task(running.id).status == TaskStatus.RUNNING
    assert store.close_session(session.id, "again") == ([], None)
    assert store.get_session(session.id).task_counts == closed.task_counts
    store.finish_task(running.id, TaskStatus.CANCELLED, error="interrupted")
    assert store.get_session(session.id).status == "closed"
    _counters_match_tasks(store, session.id)


def test_close_session_of_an_idle_or_unknown_session(store: Store, tmp_path: Path) -> None:
    idle = store.create_session(workdir=str(tmp_path))
    assert store.close_session(idle.id, "bye") == ([], None)
    assert store.get_session(idle.id).status == "closed"
    assert store.close_session(idle.id, "bye") == ([], None)
    # Closed by a bare status update: already closed, so close_session leaves it be.
    marked = store.create_session(workdir=str(tmp_path))
    (left,) = _submit(store, marked.id, 1)
    store_sql.set_session_status(store, marked.id, "closed")
    assert store.close_session(marked.id, "bye") == ([], None)
    assert store.get_task(left.id).status == TaskStatus.PENDING
    with pytest.raises(SessionNotFound):
        store.close_session("nope", "bye")


def _submit_while_closing(store: Store, session: Session, wait_for: int) -> None:
    """Six submitters against one close, which comes once ``wait_for`` tasks have landed."""
    SUBMITTERS, PER_SUBMITTER = 6, 15
    accepted: list[str] = []
    refused = [0]
    some_landed = threading.Event()
    lock = threading.Lock()

    def submitter(number: int) -> None:
        for n in range(PER_SUBMITTER):
            key = f"{session.id}-{number}-{n}" if number % 2 else None  # an owner's keys: once
            try:
                task, created = submit_task(
                    store, session_id=session.id, command="c", idempotency_key=key
                )
            except SessionClosed:
                with lock:
                    refused[0] += 1
                continue
            assert created
            with lock:
                accepted.append(task.id)
                if len(accepted) >= wait_for:
                    some_landed.set()

    def closer() -> tuple[list[str], str | None]:
        some_landed.wait(30)
        return store.close_session(session.id, "closed")

    results = _race([functools.partial(submitter, n) for n in range(SUBMITTERS)] + [closer])
    cancelled, running = results[-1]
    assert running is None
    assert sorted(cancelled) == sorted(accepted)
    assert len(accepted) + refused[0] == SUBMITTERS * PER_SUBMITTER
    assert store.pending_task_ids(session.id) == []
    assert count_tasks(store, session_id=session.id, statuses=[TaskStatus.PENDING]) == 0
    assert store.start_next_task(session.id) is None
    assert all(
        store.list_events(task_id)[-1].data == {"status": TaskStatus.CANCELLED, "error": "closed"}
        for task_id in accepted
    )
    got = store.get_session(session.id)
    assert got.status == "closed"
    assert got.task_counts.cancelled == len(accepted)
    _counters_match_tasks(store, session.id)


def test_submissions_racing_a_close_leave_nothing_pending(store: Store, tmp_path: Path) -> None:
    """Whatever lands before the close is cancelled by it; whatever comes after is refused."""
    for wait_for in (1, 5, 20, 60):
        _submit_while_closing(store, store.create_session(workdir=str(tmp_path)), wait_for)
    assert store.ownership.unclaimed_with_pending() == []


def test_starts_racing_a_close_either_run_first_or_not_at_all(store: Store, tmp_path: Path) -> None:
    for _ in range(10):
        session = store.create_session(workdir=str(tmp_path))
        head, *rest = _submit(store, session.id, 3)
        started, (cancelled, running) = _race(
            [
                lambda s=session: store.start_next_task(s.id),
                lambda s=session: store.close_session(s.id, "closed"),
            ]
        )
        if started is None:  # the close came first
            assert running is None and sorted(cancelled) == sorted(t.id for t in [head, *rest])
        else:
            assert started.id == head.id == running
            assert sorted(cancelled) == sorted(t.id for t in rest)
        assert store.start_next_task(session.id) is None
        _counters_match_tasks(store, session.id)


STALL_S = 0.9  # PostgreSQL's deadlock_timeout is 1 s: a round this slow waited for it


def _cancel_next(store: Store, task: Task) -> Task | None:
    return store.cancel_pending(task.id, "cancelled")


def _cancel_next_by_finish(store: Store, task: Task) -> Task | None:
    try:
        return store.finish_task(task.id, TaskStatus.CANCELLED, error="cancelled")
    except IllegalTransition:
        return None


@pytest.mark.parametrize(
    "cancel", [_cancel_next, _cancel_next_by_finish], ids=["cancel_pending", "finish_task"]
)
@pytest.mark.parametrize("rival", ["start_next_task", "close_session"])
def test_cancelling_the_next_task_while_it_starts_or_closes(
    store: Store, tmp_path: Path, cancel: Callable[[Store, Task], Task | None], rival: str
) -> None:
    """One of the two wins, and neither waits for the other to be chosen as a deadlock victim.

    Taking the task's row before the session's (cancel) against the session's before the
    task's (start, close) deadlocks on PostgreSQL: the retry gets it right, a second late.
    """
    for round_ in range(10):
        session = store.create_session(workdir=str(tmp_path))
        head, after = _submit(store, session.id, 2)
        rivals = {
            "start_next_task": lambda s=session: store.start_next_task(s.id),
            "close_session": lambda s=session: store.close_session(s.id, "closed"),
        }
        began = time.perf_counter()
        outcome, cancelled = _race([rivals[rival], lambda h=head: cancel(store, h)])
        took = time.perf_counter() - began
        if rival == "start_next_task":
            assert isinstance(outcome, Task)
            if cancelled is None:  # the start came first; cancel_pending leaves a running task
                assert outcome.id == head.id and cancel is _cancel_next
            elif outcome.id == head.id:  # the start came first; finish_task cancelled it running
                assert cancel is _cancel_next_by_finish
                assert cancelled.id == head.id and cancelled.started_at is not None
                assert store.get_session(session.id).status == "idle"
            else:  # the cancel came first: the next task started
                assert (cancelled.id, outcome.id) == (head.id, after.id)
                assert cancelled.started_at is None
        else:
            closed_ids, running = outcome
            assert running is None
            expected = {after.id} if cancelled is not None else {head.id, after.id}
            assert set(closed_ids) == expected
            assert store.get_task(head.id).status == TaskStatus.CANCELLED
        _counters_match_tasks(store, session.id)
        assert took < STALL_S, f"round {round_} took {took:.2f}s: a lock-order deadlock?"


# the restart rule


def test_rescue_fails_running_tasks_of_dead_nodes_once(store: Store, tmp_path: Path) -> None:
    working, queued, closing = (store.create_session(workdir=str(tmp_path)) for _ in range(3))
    dead = store.nodes.join(None, 60)
    epoch = store.ownership.claim(working.id, dead.id)
    w1, w2 = _submit(store, working.id, 2)
    store.start_next_task(working.id, epoch=epoch)
    (q1,) = _submit(store, queued.id, 1)
    (c1,) = _submit(store, closing.id, 1)
    store.start_next_task(closing.id)  # no claim at all (a run before nodes): an orphan too
    store.close_session(closing.id, "bye")
    store.nodes.leave(dead.id)
    me = store.nodes.join(None, 60)
    assert sorted(store.ownership.rescue(me.id)) == sorted([working.id, closing.id])
    for task_id, node in ((w1.id, dead.id), (c1.id, None)):
        task = store.get_task(task_id)
        assert (task.status, task.error) == (TaskStatus.FAILED, lost_node_error(node))
        assert task.completed_at is not None
        assert store.list_events(task_id)[-1].data == {
            "status": TaskStatus.FAILED,
            "error": lost_node_error(node),
        }
    assert dead.id in lost_node_error(dead.id)
    assert [store.get_session(s.id).status for s in (working, queued, closing)] == [
        "idle",
        "idle",
        "closed",
    ]
    assert store.get_session(working.id).node is None
    assert store_sql.running_tasks(store) == []
    assert store.get_task(w2.id).status == store.get_task(q1.id).status == TaskStatus.PENDING
    assert store.ownership.unclaimed_with_pending() == sorted([working.id, queued.id])
    for session in (working, queued, closing):
        _counters_match_tasks(store, session.id)
    # Once: the queues carry on where they were, under a new claim.
    assert store.ownership.rescue(me.id) == []
    assert store.start_next_task(working.id, epoch=store.ownership.claim(working.id, me.id)).id == (
        w2.id
    )
    assert store.start_next_task(queued.id).id == q1.id


# upgrading a database from before the queue order


def test_an_upgrade_numbers_each_session_queue_in_acceptance_order(
    database_url: str, queue_numbers: QueueNumbers, last_seq: LastSeq
) -> None:
    engine = Engine(storage_database.connect(database_url), database_url)
    assert migrations.migrate(engine, target=2) == 2
    t0 = datetime(2026, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)
    db = engine.db
    p = "%s" if engine.is_postgres else "?"
    # (id, session, status, created): ids against the clock, a tie, and a clock that went back.
    tasks = [
        ("a3", "s1", TaskStatus.PENDING, t0 + timedelta(seconds=2)),
        ("a1", "s1", TaskStatus.COMPLETED, t0),
        ("a2", "s1", TaskStatus.PENDING, t0 + timedelta(seconds=1)),
        ("a0", "s1", TaskStatus.PENDING, t0 + timedelta(seconds=1)),
        ("b1", "s2", TaskStatus.PENDING, t0 + timedelta(seconds=5)),
        ("b2", "s2", TaskStatus.PENDING, t0 - timedelta(seconds=5)),
    ]

    def insert_v2_rows() -> None:
        for session_id, pending, completed in (("s1", 3, 1), ("s2", 2, 0), ("s3", 0, 0)):
            db.execute_sql(
                "INSERT INTO sessions (id, status, workdir, allowed_tools, disallowed_tools,"
                " metadata, created_at, updated_at, n_pending, n_completed)"
                f" VALUES ({', '.join([p] * 10)})",
                (session_id, "idle", "/w", "[]", "[]", "{}", to_db_time(t0), to_db_time(t0))
                + (pending, completed),
            )
        for task_id, session_id, status, created in tasks:
            done = (
                None if status == TaskStatus.PENDING else to_db_time(created + timedelta(seconds=1))
            )
            db.execute_sql(
                "INSERT INTO tasks (id, session_id, command, status, created_at, started_at,"
                f" completed_at, updated_at, metadata) VALUES ({', '.join([p] * 9)})",
                (task_id, session_id, "c", status, to_db_time(created), done, done)
                + (done or to_db_time(created), "{}"),
            )

    engine.write(insert_v2_rows)
    assert "seq" not in {c.name for c in engine.read(lambda: db.get_columns("tasks"))}
    assert migrations.migrate(engine) == migrations.LATEST_VERSION
    assert queue_numbers(engine, "s1") == {"a1": 1, "a0": 2, "a2": 3, "a3": 4}
    assert queue_numbers(engine, "s2") == {"b2": 1, "b1": 2}
    assert [last_seq(engine, s) for s in ("s1", "s2", "s3")] == [4, 2, 0]
    engine.close()

    store = open_store(database_url)
    try:
        assert schema_version(store) == migrations.LATEST_VERSION
        assert store.pending_task_ids("s1") == ["a0", "a2", "a3"]
        assert store.pending_task_ids("s2") == ["b2", "b1"]
        assert _run_queue(store, "s1") == ["a0", "a2", "a3"]
        assert _run_queue(store, "s2") == ["b2", "b1"]
        # New tasks go on after the numbers the upgrade handed out.
        newer, _ = submit_task(store, session_id="s1", command="new")
        assert queue_numbers(store, "s1")[newer.id] == 5
        first, _ = submit_task(store, session_id="s3", command="first")
        assert queue_numbers(store, "s3") == {first.id: 1}
        assert _run_queue(store, "s1") == [newer.id]
        for session_id in ("s1", "s2", "s3"):
            _counters_match_tasks(store, session_id)
    finally:
        store.close()
