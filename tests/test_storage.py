"""The store on SQLite and on PostgreSQL: the same tests, one fixture parametrised over both."""

from __future__ import annotations

import base64
import gc
import itertools
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import psycopg2
import pytest
from peewee import OperationalError

from aicli.contract import TERMINAL_STATUSES, Event, Page, Session, Task, TaskStatus, Usage
from aicli.errors import (
    IllegalTransition,
    InvalidRequest,
    SessionClosed,
    SessionNotFound,
    StorageError,
    TaskNotFound,
)
from aicli.storage import DEFAULT_DATABASE_URL, Store, migrations, open_store, resolve_database_url
from aicli.storage import database as storage_database
from aicli.storage.engine import Engine
from aicli.storage.fields import to_db_time
from aicli.storage.paging import encode_cursor
from aicli.storage.schema import bind_tables
from aicli.storage.transitions import PREDECESSORS
from aicli.testing import store_sql
from aicli.testing.postgres import fresh_schema_url
from aicli.testing.store_sql import captured_queries, submit_task
from tests import store_reads
from tests.pages import walk_pages
from tests.store_reads import count_tasks, last_event_seq, schema_version, tasks_by_id

# fixtures (tests.storage_fixtures): each test runs on a SQLite file and on a PostgreSQL schema

pytest_plugins = ("tests.storage_fixtures",)


@pytest.fixture
def session(store: Store, tmp_path: Path) -> Session:
    return store.create_session(workdir=str(tmp_path))


def _tasks(store: Store, session_id: str, count: int) -> list[Task]:
    """New tasks as reads return them: without the ``queue_position`` only ``create_task`` sets."""
    made = [submit_task(store, session_id=session_id, command=f"c{i}")[0] for i in range(count)]
    return [msgspec.structs.replace(task, queue_position=None) for task in made]


def _walk(store: Store, order: str, limit: int, **filters: object) -> list[Task]:
    seen: list[Task] = []
    for page in walk_pages(
        lambda cursor: store.list_tasks(limit=limit, cursor=cursor, order=order, **filters), limit
    ):
        seen.extend(page.data)
    return seen


def _key(item: Task | Session) -> tuple[datetime, str]:
    assert item.created_at is not None
    return (item.created_at, item.id)


# sessions


def test_session_round_trips_every_field(store: Store, tmp_path: Path) -> None:
    created = store.create_session(
        workdir=str(tmp_path),
        model="claude-sonnet-4-5",
        permission_mode="acceptEdits",
        allowed_tools=["Bash", "Read"],
        disallowed_tools=("WebFetch",),
        append_system_prompt="Be brief. ünïcode ✓",
        max_turns=3,
        metadata={"team": "core", "ticket": "A-1"},
    )
    got = store.get_session(created.id)
    assert isinstance(got, Session)
    assert got == created
    assert got.status == "idle"
    assert got.allowed_tools == ("Bash", "Read")
    assert got.disallowed_tools == ("WebFetch",)
    assert got.metadata == {"team": "core", "ticket": "A-1"}
    assert got.claude_session_id is None
    assert got.last_active_at is None
    assert got.created_at is not None and got.created_at.tzinfo is UTC
    assert got.updated_at == got.created_at
    assert msgspec.structs.asdict(got.task_counts) == dict.fromkeys(tuple(TaskStatus), 0)
    assert got.total_cost_usd == 0.0


def test_unknown_ids_raise_not_found(store: Store) -> None:
    with pytest.raises(SessionNotFound):
        store.get_session("nope")
    with pytest.raises(SessionNotFound):
        store.update_session("nope", claude_session_id="c")
    for call in (
        lambda: submit_task(store, session_id="nope", command="x"),
        lambda: store.start_next_task("nope"),
        lambda: store.close_session("nope", "closed"),
    ):
        with pytest.raises(SessionNotFound):
            call()
    for call in (
        lambda: store.get_task("nope"),
        lambda: store.finish_task("nope", TaskStatus.CANCELLED),
        lambda: store.finish_task("nope", TaskStatus.COMPLETED, events=[("x", {})]),
        lambda: store.cancel_pending("nope", "gone"),
        lambda: store.append_events("nope", [("x", {})]),
        lambda: store.list_events("nope"),
    ):
        with pytest.raises(TaskNotFound):
            call()
    assert not store.has_pending("nope")


def test_invalid_session_arguments_are_refused(store: Store, session: Session) -> None:
    with pytest.raises(InvalidRequest, match="permission_mode"):
        store.create_session(workdir="/", permission_mode="yolo")


def test_update_session_sets_fields_and_bumps_updated_at(store: Store, session: Session) -> None:
    updated = store.update_session(session.id, claude_session_id="claude-1")
    assert updated.claude_session_id == "claude-1"
    assert updated.status == session.status
    assert updated.updated_at > session.updated_at
    again = store.update_session(session.id, claude_session_id="claude-1")
    assert again.updated_at > updated.updated_at


def test_a_closed_session_stays_closed(store: Store, session: Session) -> None:
    store.close_session(session.id, "bye")
    assert store.update_session(session.id, claude_session_id="c").claude_session_id == "c"
    assert store.get_session(session.id).status == "closed"


def test_session_counts_costs_and_status_queries(store: Store, tmp_path: Path) -> None:
    first = store.create_session(workdir=str(tmp_path))
    second = store.create_session(workdir=str(tmp_path))
    closed = store.create_session(workdir=str(tmp_path))
    store_sql.set_session_status(store, second.id, "busy")
    store_sql.set_session_status(store, closed.id, "closed")
    done, failed, pending = _tasks(store, first.id, 3)
    assert store.start_next_task(first.id).id == done.id
    store.finish_task(done.id, TaskStatus.COMPLETED, cost_usd=0.25)
    assert store.start_next_task(first.id).id == failed.id
    store.finish_task(failed.id, TaskStatus.FAILED, error="boom", cost_usd=0.5)
    got = store.get_session(first.id)
    assert msgspec.structs.asdict(got.task_counts) == {
        TaskStatus.PENDING: 1,
        TaskStatus.RUNNING: 0,
        TaskStatus.COMPLETED: 1,
        TaskStatus.FAILED: 1,
        TaskStatus.CANCELLED: 0,
    }
    assert got.total_cost_usd == pytest.approx(0.75)
    assert store.open_session_count() == 2
    idle_or_busy = store.list_sessions(status=["idle", "busy"], order="asc").data
    assert [s.id for s in idle_or_busy] == [first.id, second.id]
    assert [s.id for s in store.list_sessions(status=["closed"]).data] == [closed.id]
    listed = {s.id: s for s in store.list_sessions(limit=10).data}
    assert listed[first.id] == got
    assert [s.id for s in store.list_sessions(status=["busy"]).data] == [second.id]
    assert [s.id for s in store.list_sessions(status=["idle", "closed"], order="asc").data] == [
        first.id,
        closed.id,
    ]
    with pytest.raises(InvalidRequest, match="status"):
        store.list_sessions(status=["asleep"])


def test_session_pages_walk_both_orders(store: Store, tmp_path: Path) -> None:
    made = [store.create_session(workdir=str(tmp_path)) for _ in range(7)]
    for order, expected in (("asc", made), ("desc", made[::-1])):
        seen: list[Session] = []
        cursor = None
        while True:
            page = store.list_sessions(limit=3, cursor=cursor, order=order)
            seen.extend(page.data)
            if not page.has_more:
                break
            cursor = page.next_cursor
        assert [s.id for s in seen] == [s.id for s in expected]


# tasks


def test_task_round_trips_and_idempotency(store: Store, session: Session, tmp_path: Path) -> None:
    command = "x" * 100_000
    task, created = submit_task(
        store,
        session_id=session.id,
        command=command,
        timeout_s=2.5,
        metadata={"k": "v"},
        idempotency_key="key-1",
    )
    assert created
    assert isinstance(task, Task)
    # A new task knows its place in the queue; a task read back leaves that to the actor.
    assert task.queue_position == 0
    stored = store.get_task(task.id)
    assert stored == msgspec.structs.replace(task, queue_position=None)
    assert task.status == TaskStatus.PENDING
    assert task.command == command
    assert task.timeout_s == 2.5
    assert task.metadata == {"k": "v"}
    assert task.started_at is None and task.completed_at is None
    again, created_again = submit_task(
        store,
        session_id=session.id,
        command=command,
        timeout_s=2.5,
        metadata={"k": "v"},
        idempotency_key="key-1",
    )
    assert (again, created_again) == (stored, False)
    assert store.task_for_idempotency_key(session.id, "key-1") == stored
    assert store.task_for_idempotency_key(session.id, "key-2") is None
    other = store.create_session(workdir=str(tmp_path), owner="someone")
    elsewhere, created_elsewhere = submit_task(
        store, session_id=other.id, command="c", idempotency_key="key-1"
    )
    assert created_elsewhere and elsewhere.id != task.id  # another owner's keys are its own
    plain = [submit_task(store, session_id=session.id, command="c") for _ in range(2)]
    assert all(created for _, created in plain)
    assert [t.queue_position for t, _ in plain] == [1, 2]


def test_closed_sessions_take_no_tasks_but_replay_idempotent_ones(
    store: Store, session: Session
) -> None:
    first, _ = submit_task(store, session_id=session.id, command="c", idempotency_key="k")
    store_sql.set_session_status(store, session.id, "closed")
    with pytest.raises(SessionClosed):
        submit_task(store, session_id=session.id, command="c")
    with pytest.raises(SessionClosed):
        submit_task(store, session_id=session.id, command="c", idempotency_key="other")
    assert submit_task(store, session_id=session.id, command="c", idempotency_key="k") == (
        msgspec.structs.replace(first, queue_position=None),
        False,
    )


def test_task_life_stores_every_result_field(store: Store, session: Session) -> None:
    task, _ = submit_task(store, session_id=session.id, command="c")
    before = datetime.now(UTC)
    running = store.start_next_task(session.id)
    assert running is not None and running.id == task.id
    assert running.status == TaskStatus.RUNNING
    assert running.started_at is not None and before <= running.started_at <= datetime.now(UTC)
    assert running.started_at.tzinfo is UTC
    assert store_sql.running_tasks(store) == [running]
    done = store.finish_task(
        task.id,
        TaskStatus.COMPLETED,
        output="the answer",
        cost_usd=0.0123,
        num_turns=4,
        duration_ms=1234,
        usage={"input_tokens": 10, "output_tokens": 20},
        events=[("result", {"text": "the answer"})],
    )
    assert done == store.get_task(task.id)
    assert (done.status, done.output, done.error) == (TaskStatus.COMPLETED, "the answer", None)
    assert (done.cost_usd, done.num_turns, done.duration_ms) == (0.0123, 4, 1234)
    assert done.usage == Usage(input_tokens=10, output_tokens=20)
    assert done.started_at == running.started_at
    assert done.completed_at is not None and running.started_at <= done.completed_at
    assert done.completed_at <= datetime.now(UTC)
    assert store_sql.running_tasks(store) == []
    # The life in events: accepted, started, the outcome's events, then the terminal status.
    assert [(e.seq, e.type, e.data) for e in store.list_events(task.id)] == [
        (1, "status", {"status": TaskStatus.PENDING}),
        (2, "status", {"status": TaskStatus.RUNNING}),
        (3, "result", {"text": "the answer"}),
        (4, "status", {"status": TaskStatus.COMPLETED}),
    ]


TRANSITIONS = list(itertools.product(tuple(TaskStatus), tuple(TaskStatus)))


def _task_in(store: Store, workdir: str, status: str) -> Task:
    """A task in ``status``, alone in a session of its own (so that it is the one to start)."""
    session = store.create_session(workdir=workdir)
    task, _ = submit_task(store, session_id=session.id, command="c")
    if status == TaskStatus.CANCELLED:
        store.finish_task(task.id, TaskStatus.CANCELLED)
    elif status != TaskStatus.PENDING:
        started = store.start_next_task(session.id)
        assert started is not None and started.id == task.id
        if status != TaskStatus.RUNNING:
            store.finish_task(task.id, status)
    return store.get_task(task.id)


@pytest.mark.parametrize(("before", "after"), TRANSITIONS, ids=[f"{a}-{b}" for a, b in TRANSITIONS])
def test_only_the_state_machine_edges_are_allowed(
    store: Store, tmp_path: Path, before: str, after: str
) -> None:
    task = _task_in(store, str(tmp_path), before)
    assert task.status == before
    events_before = store.list_events(task.id)

    if after == TaskStatus.RUNNING:
        # Only the queue starts tasks: the session's next one, or nothing.
        started = store.start_next_task(task.session_id)
        if before == TaskStatus.PENDING:
            assert (
                started is not None
                and started.id == task.id
                and started.status == TaskStatus.RUNNING
            )
        else:
            assert started is None
            assert store.get_task(task.id) == task
        return
    if before in PREDECESSORS.get(after, ()):
        moved = store.finish_task(task.id, after, output="o", error="e")
        assert moved.status == after
        assert store.list_events(task.id)[-1].data == {"status": after, "error": "e"}
    else:
        with pytest.raises(IllegalTransition):
            store.finish_task(task.id, after, output="o", error="e", events=[("late", {})])
        assert store.get_task(task.id) == task
        assert store.list_events(task.id) == events_before


def test_terminal_tasks_never_change(store: Store, tmp_path: Path) -> None:
    for status in TERMINAL_STATUSES:
        task = _task_in(store, str(tmp_path), status)
        for target in tuple(TaskStatus):
            if target == TaskStatus.RUNNING:
                assert store.start_next_task(task.session_id) is None
                continue
            expected = "terminal" if target == TaskStatus.PENDING else status
            with pytest.raises(IllegalTransition, match=expected):
                store.finish_task(task.id, target, output="late")
        assert store.cancel_pending(task.id, "late") is None
        assert store.get_task(task.id) == task


def test_pending_running_and_counts(store: Store, tmp_path: Path) -> None:
    one = store.create_session(workdir=str(tmp_path))
    two = store.create_session(workdir=str(tmp_path))
    a1, a2, a3 = _tasks(store, one.id, 3)
    b1, b2 = _tasks(store, two.id, 2)
    assert store.start_next_task(one.id).id == a1.id
    store.finish_task(b2.id, TaskStatus.CANCELLED)
    assert [t.id for t in store_reads.pending_tasks(store)] == [a2.id, a3.id, b1.id]
    assert [t.id for t in store_reads.pending_tasks(store, one.id)] == [a2.id, a3.id]
    assert [t.id for t in store_sql.running_tasks(store)] == [a1.id]
    assert count_tasks(store, session_id=one.id, statuses=[TaskStatus.PENDING]) == 2
    queued = [TaskStatus.PENDING, TaskStatus.RUNNING]
    assert count_tasks(store, session_id=one.id, statuses=queued) == 3
    assert count_tasks(store, session_id=None, statuses=tuple(TaskStatus)) == 5
    assert store.task_status_counts() == {
        TaskStatus.PENDING: 3,
        TaskStatus.RUNNING: 1,
        TaskStatus.COMPLETED: 0,
        TaskStatus.FAILED: 0,
        TaskStatus.CANCELLED: 1,
    }


def test_pending_task_ids_are_the_queue_in_acceptance_order(store: Store, tmp_path: Path) -> None:
    one = store.create_session(workdir=str(tmp_path))
    other = store.create_session(workdir=str(tmp_path))
    a1, a2, a3, a4 = _tasks(store, one.id, 4)
    _tasks(store, other.id, 1)
    assert store.start_next_task(one.id).id == a1.id
    store.finish_task(a3.id, TaskStatus.CANCELLED)
    assert store.pending_task_ids(one.id) == [a2.id, a4.id]
    assert store.pending_task_ids(one.id) == [
        t.id for t in store_reads.pending_tasks(store, one.id)
    ]
    assert store.pending_task_ids("nope") == []


def test_values_read_back_have_every_field(store: Store, session: Session) -> None:
    """Rows fill the frozen values directly, so a field the row code forgot would go unseen."""
    task, _ = submit_task(store, session_id=session.id, command="c")
    (event,) = store.append_events(task.id, [("x", {})])
    for value in (
        store.get_task(task.id),
        store.get_session(session.id),
        store.list_events(task.id)[0],
        task,
        store.start_next_task(session.id),
        store.update_session(session.id, claude_session_id="c"),
        store.finish_task(task.id, TaskStatus.COMPLETED, events=[("y", {})]),
        store.cancel_pending(submit_task(store, session_id=session.id, command="c")[0].id, "e"),
        event,
    ):
        assert all(hasattr(value, name) for name in value.__struct_fields__)


def test_hot_calls_run_few_statements(store: Store, session: Session) -> None:
    """What each call costs is mostly its statements: keep them few (BEGIN/COMMIT not shown).

    The actor's calls name its claim's epoch, checked within statements it runs anyway."""
    epoch = store.ownership.claim(session.id, store.nodes.join(None, 60).id)
    task, _ = submit_task(store, session_id=session.id, command="c")
    # An append costs one statement more on PostgreSQL: the task's row lock comes first;
    # its last adds what it stored to the session's stored_bytes (aicli.storage.usage).
    append = 4 if store.is_postgres else 3
    # Appending alone commits lazily: one setting on PostgreSQL, two on SQLite (set, restore).
    lazy = 1 if store.is_postgres else 2
    calls = {
        # its owner's max_stored_bytes (aicli.storage.usage), count (and number) it in the
        # session, insert it, insert its pending event
        "create_task": (lambda: submit_task(store, session_id=session.id, command="c"), 4),
        "get_task": (lambda: store.get_task(task.id), 1),
        "get_session": (lambda: store.get_session(session.id), 1),
        "update_session": (lambda: store.update_session(session.id, claude_session_id="x"), 1),
        # lock the session, claim the next task, counters with the session busy, its event
        "start_next_task": (lambda: store.start_next_task(session.id, epoch=epoch), 3 + append),
        "start_next_task (one runs)": (lambda: store.start_next_task(session.id, epoch=epoch), 2),
        "append_events": (
            lambda: store.append_events(task.id, [("a", {}), ("b", {})], epoch=epoch),
            append + lazy,
        ),
        "list_events": (lambda: store.list_events(task.id), 1),
        # (PostgreSQL: the session's lock,) the move, counters with the session idle, its
        # events and status event together
        "finish_task": (
            lambda: store.finish_task(
                task.id, TaskStatus.COMPLETED, cost_usd=0.5, events=[("r", {})], epoch=epoch
            ),
            (3 if store.is_postgres else 2) + append,
        ),
        "pending_task_ids": (lambda: store.pending_task_ids(session.id), 1),
        "has_pending": (lambda: store.has_pending(session.id), 1),
        # the rows' sizes (a page stops at paging.PAGE_BYTES before reading them), the page
        "list_tasks": (lambda: store.list_tasks(limit=50), 2),
    }
    for name, (call, statements) in calls.items():
        with captured_queries(store) as queries:
            call()
        assert len(queries) == statements, (name, [q.sql for q in queries])
    assert store.get_session(session.id).task_counts.completed == 1


# events


def test_events_get_consecutive_sequence_numbers(store: Store, session: Session) -> None:
    task, _ = submit_task(store, session_id=session.id, command="c")
    # A task is born with its first event, in the transaction that accepts it.
    (accepted,) = store.list_events(task.id)
    assert (accepted.seq, accepted.type, accepted.data) == (
        1,
        "status",
        {"status": TaskStatus.PENDING},
    )
    assert accepted.created_at == task.created_at
    assert last_event_seq(store, task.id) == 1
    assert store.list_events(task.id, after=1) == []
    assert store.append_events(task.id, []) == []
    first = store.append_events(task.id, [("progress", {"step": 1})])
    more = store.append_events(
        task.id, [("assistant", {"text": "hé", "nested": [1, {"a": None}]}), ("result", {})]
    )
    assert [e.seq for e in first + more] == [2, 3, 4]
    assert all(isinstance(e, Event) for e in first + more)
    assert store.list_events(task.id) == [accepted, *first, *more]
    assert store.list_events(task.id, after=2) == more
    assert store.list_events(task.id, after=2, limit=1) == more[:1]
    assert store.list_events(task.id, after=4) == []
    assert last_event_seq(store, task.id) == 4
    assert more[0].data == {"text": "hé", "nested": [1, {"a": None}]}
    assert more[0].created_at.tzinfo is UTC
    for bad in ([("x",)], [("", {})], [("x" * 65, {})], [("x", [])], ["x"]):
        with pytest.raises(InvalidRequest, match="event") as caught:
            store.append_events(task.id, bad)
        assert caught.value.details == {"field": "events"}
    with pytest.raises(InvalidRequest, match="after"):
        store.list_events(task.id, after=-1)
    with pytest.raises(InvalidRequest, match="limit"):
        store.list_events(task.id, limit=0)


# processes


def test_processes_are_remembered_until_forgotten(store: Store) -> None:
    assert store.recorded_processes() == []
    store.record_process(4242, 1764000000.123456, "session-1", "claude")
    store.record_process(4243, 1764000001.5, "server", "mcp")
    assert store.recorded_processes() == [
        (4242, 1764000000.123456, "session-1", "claude"),
        (4243, 1764000001.5, "server", "mcp"),
    ]
    store.forget_process(4242, 1764000000.0)
    assert len(store.recorded_processes()) == 2
    store.forget_process(4242, 1764000000.123456)
    assert store.recorded_processes() == [(4243, 1764000001.5, "server", "mcp")]


# pagination


def test_pages_walk_every_row_once_in_both_orders(store: Store, session: Session) -> None:
    made = _tasks(store, session.id, 23)
    for limit in (1, 5, 23, 200):
        assert _walk(store, "asc", limit) == made
        assert _walk(store, "desc", limit) == made[::-1]
    page = store.list_tasks(limit=23)
    assert page == Page(data=made[::-1], has_more=False, next_cursor=None)
    page = store.list_tasks(limit=22)
    assert page.has_more and page.next_cursor == encode_cursor(made[1].created_at, made[1].id)


def test_filters_combine_with_pagination(store: Store, tmp_path: Path) -> None:
    sessions = [store.create_session(workdir=str(tmp_path)) for _ in range(5)]
    one, two = sessions[1], sessions[2]
    made = [
        submit_task(store, session_id=sessions[i % len(sessions)].id, command=str(i))[0]
        for i in range(30)
    ]
    for task in made[::3]:
        store.finish_task(task.id, TaskStatus.CANCELLED)
    # One task runs in each session: its first that is still pending.
    for session in sessions:
        started = store.start_next_task(session.id)
        assert started is not None
        assert started.id == next(
            t.id for i, t in enumerate(made) if t.session_id == session.id and i % 3
        )
    current = tasks_by_id(store, (t.id for t in made))
    ordered = [current[t.id] for t in made]
    assert {t.status for t in ordered if t.session_id == two.id} == {
        TaskStatus.PENDING,
        TaskStatus.RUNNING,
        TaskStatus.CANCELLED,
    }

    def expect(predicate: object) -> list[Task]:
        return [t for t in ordered if predicate(t)]  # type: ignore[operator]

    cases = [
        ({"session_id": one.id}, lambda t: t.session_id == one.id),
        ({"status": [TaskStatus.CANCELLED]}, lambda t: t.status == TaskStatus.CANCELLED),
        (
            {"status": {TaskStatus.PENDING, TaskStatus.RUNNING}},
            lambda t: t.status in (TaskStatus.PENDING, TaskStatus.RUNNING),
        ),
        ({"status": tuple(TaskStatus)}, lambda t: True),
        (
            {"session_id": two.id, "status": [TaskStatus.RUNNING, TaskStatus.CANCELLED]},
            lambda t: (
                t.session_id == two.id and t.status in (TaskStatus.RUNNING, TaskStatus.CANCELLED)
            ),
        ),
        (
            {"created_after": made[4].created_at, "created_before": made[20].created_at},
            lambda t: made[4].created_at < t.created_at < made[20].created_at,
        ),
        (
            {
                "status": [TaskStatus.PENDING, TaskStatus.CANCELLED],
                "created_after": made[10].created_at,
            },
            lambda t: (
                t.status in (TaskStatus.PENDING, TaskStatus.CANCELLED)
                and t.created_at > made[10].created_at
            ),
        ),
    ]
    for filters, predicate in cases:
        wanted = expect(predicate)
        assert wanted, filters
        for limit in (1, 4, 50):
            assert _walk(store, "asc", limit, **filters) == wanted, filters
            assert _walk(store, "desc", limit, **filters) == wanted[::-1], filters
    assert _walk(store, "asc", 10, created_after=made[-1].created_at) == []


def test_time_bounds_are_exclusive_and_need_an_offset(store: Store, session: Session) -> None:
    made = _tasks(store, session.id, 3)
    middle = made[1].created_at
    assert [t.id for t in _walk(store, "asc", 10, created_after=middle)] == [made[2].id]
    assert [t.id for t in _walk(store, "asc", 10, created_before=middle)] == [made[0].id]
    in_paris = middle.astimezone(timezone(timedelta(hours=1)))
    assert [t.id for t in _walk(store, "asc", 10, created_before=in_paris)] == [made[0].id]
    for field in ("created_after", "created_before"):
        with pytest.raises(InvalidRequest, match=field):
            store.list_tasks(**{field: middle.replace(tzinfo=None)})


def test_a_cursor_is_a_position_valid_in_either_order(store: Store, session: Session) -> None:
    made = _tasks(store, session.id, 6)
    page = store.list_tasks(limit=3, order="asc")
    assert page.data == made[:3]
    back = store.list_tasks(limit=10, order="desc", cursor=page.next_cursor)
    assert back.data == made[:2][::-1]
    assert not back.has_more


def test_rows_sharing_a_timestamp_page_by_id(store: Store, session: Session) -> None:
    tasks_table = bind_tables(store.engine.db).tasks
    same = datetime(2026, 1, 1, tzinfo=UTC)
    ids = [f"{i:032x}" for i in range(7)]
    store.engine.write(
        lambda: tasks_table.insert_many(
            [
                {
                    "id": task_id,
                    "session": session.id,
                    "command": "c",
                    "status": TaskStatus.PENDING,
                    "created_at": same,
                    "updated_at": same,
                    "metadata": {},
                }
                for task_id in ids
            ]
        ).execute()
    )
    assert [t.id for t in _walk(store, "asc", 2)] == ids
    assert [t.id for t in _walk(store, "desc", 3)] == ids[::-1]
    assert store.get_task(ids[0]).created_at == same


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!",
        "abc",
        "a" * 500,
        "8J+Ygg",
        _b64("v1|2026-01-01T00:00:00Z"),
        _b64("v1|not a time|abc"),
        _b64("v1|2026-01-01T00:00:00|abc"),
        _b64("v2|2026-01-01T00:00:00+00:00|abc"),
        _b64("v1|2026-01-01T00:00:00+00:00|a b"),
        _b64("v1|2026-01-01T00:00:00+00:00|"),
        base64.urlsafe_b64encode(b"\xff\xfe|x|y").decode(),
        12,
    ],
)
def test_garbage_cursors_are_refused_by_name(store: Store, cursor: object) -> None:
    for call in (store.list_tasks, store.list_sessions):
        with pytest.raises(InvalidRequest, match="'cursor'") as caught:
            call(cursor=cursor)  # type: ignore[operator]
        assert caught.value.details == {"field": "cursor"}


@pytest.mark.parametrize("limit", [0, 201, -1, 1.5, "10", True, None])
def test_limits_outside_1_to_200_are_refused(store: Store, limit: object) -> None:
    with pytest.raises(InvalidRequest, match="'limit'"):
        store.list_tasks(limit=limit)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="'limit'"):
        store.list_sessions(limit=limit)  # type: ignore[arg-type]


def test_unknown_orders_and_statuses_are_refused(store: Store) -> None:
    with pytest.raises(InvalidRequest, match="'order'"):
        store.list_tasks(order="newest")
    with pytest.raises(InvalidRequest, match="'status'"):
        store.list_tasks(status=["done"])
    with pytest.raises(InvalidRequest, match="'status'"):
        store.list_tasks(status=[])


# the list queries use their indexes


def _plans(store: Store, calls: list) -> list[str]:
    db = store.engine.db
    with captured_queries(store) as queries:
        for call in calls:
            call()
    selects = [q for q in queries if q.sql.startswith("SELECT") and "LIMIT" in q.sql]
    assert len(selects) >= len(calls)
    plans = []
    for query in selects:
        if store.is_postgres:
            with db.atomic():
                # Tiny tables make a scan and a sort cheapest; forbid them to see
                # whether an ordered index path exists at all.
                for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
                    db.execute_sql(f"SET LOCAL {setting} = off")
                rows = db.execute_sql("EXPLAIN " + query.sql, query.params).fetchall()
            plans.append("\n".join(row[0] for row in rows))
        else:
            rows = db.execute_sql("EXPLAIN QUERY PLAN " + query.sql, query.params).fetchall()
            plans.append("\n".join(row[-1] for row in rows))
    return plans


def test_list_queries_are_index_range_scans_without_a_sort(store: Store, session: Session) -> None:
    made = _tasks(store, session.id, 3)
    cursor = encode_cursor(made[1].created_at, made[1].id)
    after = made[0].created_at
    calls = [
        lambda: store.list_tasks(),
        lambda: store.list_tasks(order="asc", cursor=cursor),
        lambda: store.list_tasks(session_id=session.id, cursor=cursor),
        lambda: store.list_tasks(status=[TaskStatus.PENDING], cursor=cursor, order="asc"),
        lambda: store.list_tasks(status=[TaskStatus.PENDING, TaskStatus.RUNNING], cursor=cursor),
        lambda: store.list_tasks(session_id=session.id, status=[TaskStatus.PENDING], cursor=cursor),
        lambda: store.list_tasks(created_after=after, cursor=cursor),
        lambda: store.list_sessions(cursor=cursor),
        lambda: store.list_sessions(status=["idle"], cursor=cursor),
    ]
    for plan in _plans(store, calls):
        if store.is_postgres:
            assert "Index" in plan and "Seq Scan" not in plan, plan
            assert "Sort" not in plan, plan
        else:
            assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
            assert "TEMP B-TREE" not in plan, plan


# migrations


def test_a_database_made_by_the_first_schema_upgrades_without_loss(
    database_url: str,
    queue_numbers: Callable[[Store, str], dict[str, int | None]],
    last_seq: Callable[[Store, str], int],
) -> None:
    engine = Engine(storage_database.connect(database_url), database_url)
    assert migrations.migrate(engine, target=1) == 1
    created = datetime(2026, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)
    started = created + timedelta(seconds=1)
    created_text, started_text = to_db_time(created), to_db_time(started)
    db = engine.db
    p = "%s" if engine.is_postgres else "?"

    def insert_v1_rows() -> None:
        db.execute_sql(
            "INSERT INTO sessions (id, status, workdir, allowed_tools, disallowed_tools,"
            " metadata, created_at, updated_at, n_running, n_pending)"
            f" VALUES ({', '.join([p] * 10)})",
            ("s1", "busy", "/w", '["Bash"]', "[]", '{"a": "b"}', created_text, created_text, 1, 1),
        )
        for task_id, status, start in (("t1", "running", started_text), ("t2", "pending", None)):
            db.execute_sql(
                "INSERT INTO tasks (id, session_id, command, status, created_at, started_at,"
                f" metadata, timeout_s) VALUES ({', '.join([p] * 8)})",
                (task_id, "s1", "do it", status, created_text, start, "{}", 30.0),
            )
        db.execute_sql(
            "INSERT INTO task_events (task_id, seq, type, created_at, data)"
            f" VALUES ({', '.join([p] * 5)})",
            ("t1", 1, "status", created_text, '{"status": "running"}'),
        )

    engine.write(insert_v1_rows)
    assert "updated_at" not in {c.name for c in engine.read(lambda: db.get_columns("tasks"))}
    engine.close()

    store = open_store(database_url)
    try:
        assert schema_version(store) == migrations.LATEST_VERSION == 13
        # Migration 10 counted what the rows already stored (an event's data among it).
        stored = store_sql.value(store, "SELECT stored_bytes FROM sessions")
        assert stored > len('{"status": "running"}') + len("do it")
        session = store.get_session("s1")
        assert (session.status, session.allowed_tools, session.metadata) == (
            "busy",
            ("Bash",),
            {"a": "b"},
        )
        assert session.created_at == created
        assert msgspec.structs.asdict(session.task_counts) == {
            **dict.fromkeys(tuple(TaskStatus), 0),
            TaskStatus.RUNNING: 1,
            TaskStatus.PENDING: 1,
        }
        running = store.get_task("t1")
        assert (running.status, running.started_at, running.command) == (
            TaskStatus.RUNNING,
            started,
            "do it",
        )
        assert running.timeout_s == 30.0
        assert store.list_events("t1")[0].data == {"status": "running"}
        tasks_table = bind_tables(store.engine.db).tasks
        backfilled = store.engine.read(
            lambda: dict(tasks_table.select(tasks_table.id, tasks_table.updated_at).tuples())
        )
        assert backfilled == {"t1": started, "t2": created}
        # Tasks created at one instant take their queue places in id order.
        assert queue_numbers(store, "s1") == {"t1": 1, "t2": 2}
        assert last_seq(store, "s1") == 2
        # The upgraded database works like a new one.
        store.finish_task("t1", TaskStatus.FAILED, error="The server restarted while the task ran.")
        assert [e.data for e in store.list_events("t1")] == [
            {"status": "running"},
            {"status": TaskStatus.FAILED, "error": "The server restarted while the task ran."},
        ]
        assert [t.id for t in store_reads.pending_tasks(store, "s1")] == ["t2"]
        assert store.get_session("s1").task_counts.failed == 1
        assert store.get_session("s1").total_cost_usd == 0.0
        assert store.get_session("s1").status == "idle"
        assert store.start_next_task("s1").id == "t2"
        newer, _ = submit_task(store, session_id="s1", command="next")
        assert newer.queue_position == 0
        assert queue_numbers(store, "s1")[newer.id] == 3
        # Sessions from before principals have no owner, and from before approvals ask none.
        assert store.get_session("s1").owner is None
        assert (session.approvals, session.approval_rules) == ("off", ())
        assert store.get_task("t1").awaiting_approval is None
    finally:
        store.close()
    reopened = open_store(database_url)
    assert schema_version(reopened) == migrations.LATEST_VERSION
    reopened.close()


def test_migrated_tables_match_the_current_models(store: Store) -> None:
    db = store.engine.db
    for model in bind_tables(db):
        table = model._meta.table_name
        columns = {c.name for c in store.engine.read(lambda t=table: db.get_columns(t))}
        assert columns == {f.column_name for f in model._meta.sorted_fields}, table


def test_a_newer_schema_is_refused(database_url: str) -> None:
    open_store(database_url).close()
    engine = Engine(storage_database.connect(database_url), database_url)
    p = "%s" if engine.is_postgres else "?"
    engine.write(
        lambda: engine.db.execute_sql(
            f"INSERT INTO schema_migrations (version, name, applied_at) VALUES ({p}, {p}, {p})",
            (99, "from the future", "2030-01-01 00:00:00.000000"),
        )
    )
    engine.close()
    with pytest.raises(StorageError, match="newer"):
        open_store(database_url)


# connections, URLs and failures


def test_database_url_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AICLI_DATABASE_URL", raising=False)
    assert resolve_database_url() == DEFAULT_DATABASE_URL == "sqlite:///aicli.db"
    monkeypatch.setenv("AICLI_DATABASE_URL", "sqlite:///from-env.db")
    assert resolve_database_url() == "sqlite:///from-env.db"
    assert resolve_database_url("sqlite:///flag.db") == "sqlite:///flag.db"


@pytest.mark.parametrize(
    "url", ["mysql://h/db", "sqlite://", "sqlite:///:memory:", "postgresql://host", "nonsense"]
)
def test_unusable_urls_are_refused_by_name(url: str) -> None:
    with pytest.raises(InvalidRequest, match="database_url"):
        open_store(url)


def test_the_default_url_is_a_wal_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AICLI_DATABASE_URL", raising=False)
    store = open_store()
    try:
        db = store.engine.db
        pragmas = store.engine.read(
            lambda: [
                db.execute_sql(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            ]
        )
        assert pragmas == ["wal", 1, 10_000, 2]  # synchronous=FULL
        assert (tmp_path / "aicli.db").exists()
    finally:
        store.close()


def test_sqlite_connections_live_as_long_as_their_threads(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'threads.db'}")
    held = store.engine._held
    session = store.create_session(workdir=str(tmp_path))
    for _ in range(3):
        worker = threading.Thread(target=lambda: store.get_session(session.id))
        worker.start()
        worker.join()
    gc.collect()
    assert len(held) == 1  # this thread's; each worker's closed as it ended
    started, release = threading.Event(), threading.Event()

    def lingering() -> None:
        store.get_session(session.id)
        started.set()
        release.wait(10)

    worker = threading.Thread(target=lingering)
    worker.start()
    started.wait(10)
    conns = [h.conn for h in held]
    store.close()
    release.set()
    worker.join()
    for conn in conns:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")


@pytest.mark.postgres
def test_dropped_postgres_connections_are_replaced(
    postgres_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked when idle past ``PG_TRUST_S``; a connection back more recently is trusted."""
    database_url = fresh_schema_url(postgres_database)
    store = open_store(database_url)
    try:
        session = store.create_session(workdir="/")
        admin = psycopg2.connect(database_url)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        admin.close()
        # As if the pooled connection had been idle past the trust window.
        monkeypatch.setattr(storage_database, "PG_TRUST_S", 0.0)
        assert store.get_session(session.id) == session
    finally:
        store.close()


def test_passwords_stay_out_of_messages() -> None:
    with pytest.raises(InvalidRequest) as caught:
        open_store("mysql://user:s3cret@host/db")
    assert "s3cret" not in caught.value.message


def test_an_unreachable_server_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="failed"):
        open_store("postgresql://postgres@127.0.0.1:1/none")


def test_ping_and_close(store: Store) -> None:
    store.ping()
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.ping()
    with pytest.raises(StorageError, match="closed"):
        store.get_task("x")


class _SerializationFailure(Exception):
    pgcode = "40001"


def _transient(store: Store) -> OperationalError:
    if store.is_postgres:
        return OperationalError(_SerializationFailure("could not serialize access"))
    return OperationalError(sqlite3.OperationalError("database is locked"))


def test_transient_failures_are_retried_whole(store: Store, session: Session) -> None:
    attempts = []

    def flaky() -> str:
        attempts.append(submit_task(store, session_id=session.id, command="c")[0].id)
        if len(attempts) < 3:
            raise _transient(store)
        return "ok"

    assert store.engine.write(flaky) == "ok"
    assert len(attempts) == 3
    # The first two attempts rolled back with their transactions.
    assert [t.id for t in store_reads.pending_tasks(store, session.id)] == attempts[2:]


def test_retries_are_bounded_and_end_in_a_storage_error(store: Store) -> None:
    attempts = itertools.count()

    def always_busy() -> None:
        next(attempts)
        raise _transient(store)

    with pytest.raises(StorageError):
        store.engine.write(always_busy)
    assert next(attempts) == 8

    def broken() -> None:
        next(attempts)
        raise OperationalError("no such table: nowhere")

    with pytest.raises(StorageError, match="nowhere"):
        store.engine.read(broken)
    assert next(attempts) == 10


def test_a_writer_waits_for_another_process_lock_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = open_store(f"sqlite:///{path}")
    session = store.create_session(workdir=str(tmp_path))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    result: list[Task] = []
    writer = threading.Thread(
        target=lambda: result.append(submit_task(store, session_id=session.id, command="c")[0])
    )
    writer.start()
    writer.join(timeout=0.3)
    assert writer.is_alive() and not result, "the writer should wait on busy_timeout"
    other.execute("COMMIT")
    other.close()
    writer.join(timeout=10)
    assert [t.id for t in store_reads.pending_tasks(store)] == [result[0].id]
    store.close()


def test_only_appends_of_a_running_turn_skip_the_wait_for_the_disk(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/lazy.db")
    try:
        engine = store.engine
        synchronous = lambda: engine.read(  # noqa: E731
            lambda: engine.execute("PRAGMA synchronous").fetchone()[0]
        )
        session = store.create_session(workdir=str(tmp_path))
        task, _ = submit_task(store, session_id=session.id, command="c")
        store.start_next_task(session.id)
        store.append_events(task.id, [("a", {})])
        assert synchronous() == 2, "FULL again for every other commit"
    finally:
        store.close()
