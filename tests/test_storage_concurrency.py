"""The store under many threads, on SQLite and on PostgreSQL: nothing lost, nothing torn."""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from aicli.contract import Session, Task, TaskStatus
from aicli.errors import AicliError, IllegalTransition
from aicli.storage import Store, migrations, open_store
from aicli.testing.store_sql import submit_task
from tests.pages import walk_pages
from tests.store_reads import count_tasks, last_event_seq, schema_version, tasks_by_id

T = TypeVar("T")

WRITERS = 8
WRITES_PER_WRITER = 500


pytest_plugins = ("tests.storage_fixtures",)


class Crew:
    """Threads that start together and whose failures fail the test."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []

    def spawn(self, target: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 - reported by join()
                self.errors.append(exc)

        self._threads.append(threading.Thread(target=run, daemon=True))

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def run(self, timeout: float = 60) -> None:
        self.start()
        self.join(timeout)

    def join(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in self._threads), "threads hung"
        if self.errors:
            raise self.errors[0]


def _check_task_page(items: list[Task], previous: tuple | None, order: str) -> tuple | None:
    """A page is ordered past the previous one and holds only whole, coherent tasks."""
    for task in items:
        key = (task.created_at, task.id)
        if previous is not None:
            assert key < previous if order == "desc" else key > previous
        previous = key
        assert task.status in tuple(TaskStatus)
        if task.status == TaskStatus.PENDING:
            assert task.started_at is None and task.completed_at is None
        if task.status == TaskStatus.RUNNING:
            assert task.started_at is not None and task.completed_at is None
        if task.status == TaskStatus.COMPLETED:
            assert task.started_at and task.completed_at and task.output == f"out {task.command}"
    return previous


def _assert_counters_match_tasks(store: Store, session_id: str) -> None:
    counted = {
        status: count_tasks(store, session_id=session_id, statuses=[status])
        for status in tuple(TaskStatus)
    }
    assert msgspec.structs.asdict(store.get_session(session_id).task_counts) == counted


def _walk_all(store: Store, order: str, limit: int, **filters: Any) -> list[Task]:
    seen: list[Task] = []
    previous = None
    for page in walk_pages(
        lambda cursor: store.list_tasks(limit=limit, cursor=cursor, order=order, **filters), limit
    ):
        previous = _check_task_page(page.data, previous, order)
        seen.extend(page.data)
    return seen


def test_many_writers_and_paged_readers_lose_nothing(
    store: Store, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # A session per writer: the store runs one task of a session at a time, in order.
    sessions = [store.create_session(workdir=str(tmp_path)) for _ in range(WRITERS)]
    hot_session = store.create_session(workdir=str(tmp_path))
    hot, _ = submit_task(store, session_id=hot_session.id, command="hot")
    done = threading.Event()
    # Readers walk again once the writers have made this many rounds of progress,
    # so that they sample the whole run without starving the writers of the GIL.
    progress = threading.Condition()
    rounds = [0]
    created: dict[int, list[str]] = {}
    reads = Counter[str]()
    writers, readers = Crew(), Crew()
    start = threading.Barrier(WRITERS + 3 + 1)

    def writer(number: int) -> None:
        # Five writes per round: create, start, an event on a shared task,
        # an event on its own task, finish.
        mine = created.setdefault(number, [])
        session = sessions[number]
        start.wait()
        for round_ in range(WRITES_PER_WRITER // 5):
            task, was_created = submit_task(
                store, session_id=session.id, command=f"w{number}r{round_}"
            )
            assert was_created and task.queue_position == 0
            mine.append(task.id)
            started = store.start_next_task(session.id)
            assert started is not None and started.id == task.id
            store.append_events(hot.id, [("tick", {"writer": number, "round": round_})])
            store.append_events(task.id, [("assistant", {"text": "working"})])
            store.finish_task(
                task.id, TaskStatus.COMPLETED, output=f"out {task.command}", cost_usd=0.01
            )
            with progress:
                rounds[0] += 1
                progress.notify_all()

    def next_sample(previous: int) -> int | None:
        with progress:
            progress.wait_for(lambda: done.is_set() or rounds[0] >= previous + 40)
            return None if done.is_set() else rounds[0]

    def task_reader() -> None:
        start.wait()
        sample: int | None = 0
        while sample is not None:
            _walk_all(store, "desc", 50)
            rows = _walk_all(
                store, "asc", 37, session_id=sessions[1].id, status=[TaskStatus.RUNNING]
            )
            assert all(
                t.status == TaskStatus.RUNNING and t.session_id == sessions[1].id for t in rows
            )
            assert len(rows) <= 1  # one task of a session runs at a time
            reads["walks"] += 2
            sample = next_sample(sample)

    def session_reader() -> None:
        start.wait()
        last_total = 0
        sample: int | None = 0
        while sample is not None:
            seqs = [event.seq for event in store.list_events(hot.id)]
            assert seqs == list(range(1, len(seqs) + 1))
            counts = store.get_session(sessions[0].id).task_counts
            assert counts.running <= 1
            total = sum(msgspec.structs.astuple(counts))
            assert total >= last_total
            last_total = total
            reads["snapshots"] += 1
            sample = next_sample(sample)

    for number in range(WRITERS):
        writers.spawn(lambda number=number: writer(number))
    for reader in (task_reader, task_reader, session_reader):
        readers.spawn(reader)
    readers.start()
    writers.start()
    start.wait()
    started = time.perf_counter()
    try:
        writers.join()
    finally:
        elapsed = time.perf_counter() - started
        with progress:
            done.set()
            progress.notify_all()
        readers.join()

    writes = WRITERS * WRITES_PER_WRITER
    backend = request.node.callspec.params["database_url"]
    rate = writes / elapsed
    print(f"\n{backend}: {writes} writes in {elapsed:.2f}s ({rate:.0f}/s) while reading {reads}")
    assert reads["walks"] > 0 and reads["snapshots"] > 0
    every_id = [task_id for ids in created.values() for task_id in ids]
    assert len(every_id) == len(set(every_id)) == WRITERS * WRITES_PER_WRITER // 5
    stored = tasks_by_id(store, every_id)
    assert len(stored) == len(every_id)
    assert all(
        t.status == TaskStatus.COMPLETED and t.output == f"out {t.command}" for t in stored.values()
    )
    # pending, running, the writer's event, completed
    assert all(
        [e.type for e in store.list_events(task_id)] == ["status", "status", "assistant", "status"]
        for task_id in every_id[:50]
    )
    pending_event, *hot_events = store.list_events(hot.id)
    assert pending_event.data == {"status": TaskStatus.PENDING}
    assert [e.seq for e in hot_events] == list(range(2, len(every_id) + 2))
    assert Counter(e.data["writer"] for e in hot_events) == dict.fromkeys(
        range(WRITERS), WRITES_PER_WRITER // 5
    )
    assert store.task_status_counts()[TaskStatus.COMPLETED] == len(every_id)
    assert len(_walk_all(store, "asc", 200)) == len(every_id) + 1
    for session in sessions:
        got = store.get_session(session.id)
        assert got.status == "idle"
        assert got.task_counts.completed == WRITES_PER_WRITER // 5
        assert got.total_cost_usd == pytest.approx(0.01 * got.task_counts.completed)
        _assert_counters_match_tasks(store, session.id)
    _assert_counters_match_tasks(store, hot_session.id)


def test_pagination_walks_every_row_once_while_rows_are_inserted(
    store: Store, tmp_path: Path
) -> None:
    NEW_ROWS = 100
    session = store.create_session(workdir=str(tmp_path))
    before = [submit_task(store, session_id=session.id, command="old")[0].id for _ in range(120)]
    inserted: list[str] = []
    progress = threading.Condition()
    first_page_read = threading.Event()
    crew = Crew()

    def inserter() -> None:
        first_page_read.wait(10)
        for _ in range(NEW_ROWS):
            task, _ = submit_task(store, session_id=session.id, command="new")
            with progress:
                inserted.append(task.id)
                progress.notify_all()

    def walk(order: str) -> list[str]:
        """Page through, letting at least two inserts land between pages."""
        seen: list[str] = []
        previous = None
        cursor = None
        while True:
            page = store.list_tasks(limit=7, cursor=cursor, order=order, session_id=session.id)
            first_page_read.set()
            previous = _check_task_page(page.data, previous, order)
            seen.extend(task.id for task in page.data)
            if not page.has_more:
                return seen
            cursor = page.next_cursor
            with progress:
                target = len(inserted) + 2
                progress.wait_for(lambda t=target: len(inserted) >= min(t, NEW_ROWS), timeout=10)

    crew.spawn(inserter)
    crew.start()
    try:
        newest_first = walk("desc")
        oldest_first = walk("asc")
    finally:
        crew.join()
    assert inserted
    # Newer rows are ahead of a descending walk: it sees exactly the rows it started with.
    assert newest_first == before[::-1]
    # An ascending walk reaches the new rows too, without a gap or a repeat: one inserter
    # commits in key order, so what the walk saw is a prefix of everything, in order.
    assert oldest_first == (before + inserted)[: len(oldest_first)]
    assert len(oldest_first) > len(before)


def _race(count: int, action: Callable[[int], T]) -> list[T | AicliError]:
    """Run ``action(0..count-1)`` in threads released at once; each result or refusal."""
    gate = threading.Barrier(count)
    results: list[T | AicliError] = []
    crew = Crew()

    def run(number: int) -> None:
        gate.wait()
        try:
            results.append(action(number))
        except AicliError as exc:
            results.append(exc)

    for number in range(count):
        crew.spawn(functools.partial(run, number))
    crew.run()
    return results


def _race_one_task(store: Store, session: Session) -> None:
    task, _ = submit_task(store, session_id=session.id, command="c")
    starts = _race(WRITERS, lambda _: store.start_next_task(session.id))
    winners = [result for result in starts if isinstance(result, Task)]
    assert [t.id for t in winners] == [task.id]
    assert sum(result is None for result in starts) == WRITERS - 1, starts
    assert store.get_session(session.id).status == "busy"
    # One running status event: the losers wrote nothing.
    assert [e.data for e in store.list_events(task.id)] == [
        {"status": TaskStatus.PENDING},
        {"status": TaskStatus.RUNNING},
    ]

    def finish(number: int) -> Task:
        status = (TaskStatus.CANCELLED, TaskStatus.COMPLETED)[number % 2]
        return store.finish_task(task.id, status, output=status)

    finishes = _race(WRITERS, finish)
    winners = [result for result in finishes if isinstance(result, Task)]
    assert len(winners) == 1
    assert sum(isinstance(result, IllegalTransition) for result in finishes) == WRITERS - 1
    final = store.get_task(task.id)
    assert final == winners[0]
    assert final.output == final.status
    assert [e.data["status"] for e in store.list_events(task.id)] == [
        TaskStatus.PENDING,
        TaskStatus.RUNNING,
        final.status,
    ]
    assert store.get_session(session.id).status == "idle"


def test_racing_transitions_have_exactly_one_winner(store: Store, tmp_path: Path) -> None:
    session = store.create_session(workdir=str(tmp_path))
    for _ in range(5):
        _race_one_task(store, session)
    _assert_counters_match_tasks(store, session.id)


def test_racing_starters_run_one_task_at_a_time_in_queue_order(
    store: Store, tmp_path: Path
) -> None:
    """Threads that all keep asking for a session's next task, while more are submitted."""
    STARTERS, UPFRONT, LATER = WRITERS, 20, 20
    session = store.create_session(workdir=str(tmp_path))
    accepted = [
        submit_task(store, session_id=session.id, command="c")[0].id for _ in range(UPFRONT)
    ]
    log = threading.Lock()
    started: list[str] = []
    unfinished: list[str] = []  # started and not yet handed to finish_task
    overlaps: list[tuple[str, list[str]]] = []
    submitted = threading.Event()
    gate = threading.Barrier(STARTERS + 1)
    crew = Crew()

    def submitter() -> None:
        gate.wait()
        for _ in range(LATER):
            accepted.append(submit_task(store, session_id=session.id, command="c")[0].id)
            time.sleep(0.001)
        submitted.set()

    def starter(number: int) -> None:
        gate.wait()
        while True:
            task = store.start_next_task(session.id)
            if task is None:
                with log:
                    if submitted.is_set() and len(started) == UPFRONT + LATER:
                        return
                time.sleep(0.0005)
                continue
            with log:
                if unfinished:
                    overlaps.append((task.id, list(unfinished)))
                started.append(task.id)
                unfinished.append(task.id)
            # While it runs, the store holds it as the session's only running task.
            assert count_tasks(store, session_id=session.id, statuses=[TaskStatus.RUNNING]) == 1
            assert store.get_session(session.id).task_counts.running == 1
            assert store.start_next_task(session.id) is None
            store.append_events(task.id, [("by", {"starter": number})])
            with log:
                unfinished.remove(task.id)
            store.finish_task(task.id, TaskStatus.COMPLETED, output="done")

    for number in range(STARTERS):
        crew.spawn(functools.partial(starter, number))
    crew.spawn(submitter)
    crew.run(timeout=120)
    assert overlaps == [], "a task started while another had not been finished"
    # Started in the order the session accepted them, each once.
    assert started == accepted
    completed = count_tasks(store, session_id=session.id, statuses=[TaskStatus.COMPLETED])
    assert completed == UPFRONT + LATER
    assert store.get_session(session.id).status == "idle"
    _assert_counters_match_tasks(store, session.id)


def _race_one_key(store: Store, session: Session, key: str) -> None:
    results = _race(
        WRITERS,
        lambda _: submit_task(store, session_id=session.id, command="c", idempotency_key=key),
    )
    assert all(isinstance(result, tuple) for result in results), results
    assert sorted(created for _, created in results) == [False] * (WRITERS - 1) + [True]
    assert len({task.id for task, _ in results}) == 1


def test_racing_submits_with_one_idempotency_key_create_one_task(
    store: Store, tmp_path: Path
) -> None:
    session = store.create_session(workdir=str(tmp_path))
    for attempt in range(5):
        _race_one_key(store, session, f"key-{attempt}")
    assert count_tasks(store, session_id=session.id, statuses=[TaskStatus.PENDING]) == 5
    _assert_counters_match_tasks(store, session.id)


def test_two_stores_on_one_sqlite_file_never_see_a_locked_database(tmp_path: Path) -> None:
    """Two stores stand for two processes: only SQLite's own locking is between them."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    stores = [open_store(url), open_store(url)]
    session = stores[0].create_session(workdir=str(tmp_path))
    gate = threading.Barrier(8)
    crew = Crew()
    made: list[str] = []

    def writer(store: Store) -> None:
        gate.wait()
        for _ in range(100):
            task, _ = submit_task(store, session_id=session.id, command="c")
            store.append_events(task.id, [("progress", {"step": 1})])
            made.append(task.id)

    for number in range(8):
        crew.spawn(lambda store=stores[number % 2]: writer(store))
    try:
        crew.run()
        assert len(tasks_by_id(stores[1], made)) == len(made) == 800
        assert all(last_event_seq(stores[1], task_id) == 2 for task_id in made[::50])
    finally:
        for store in stores:
            store.close()


def test_sessions_from_many_threads(store: Store, tmp_path: Path) -> None:
    made: list[Session] = []
    gate = threading.Barrier(WRITERS)
    crew = Crew()

    def opener() -> None:
        gate.wait()
        for _ in range(10):
            session = store.create_session(workdir=str(tmp_path))
            store.update_session(session.id, claude_session_id="first")
            made.append(store.update_session(session.id, claude_session_id=session.id))

    for _ in range(WRITERS):
        crew.spawn(opener)
    crew.run()
    listed = []
    cursor = None
    while True:
        page = store.list_sessions(limit=33, cursor=cursor, order="asc")
        listed.extend(page.data)
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert sorted(s.id for s in listed) == sorted(s.id for s in made)
    assert all(s.status == "idle" and s.claude_session_id == s.id for s in listed)
    assert store.open_session_count() == WRITERS * 10


def test_stores_opening_a_new_database_at_once_migrate_it_once(database_url: str) -> None:
    """Several servers starting together on an empty database."""
    opened = _race(WRITERS, lambda _: open_store(database_url))
    try:
        assert all(isinstance(store, Store) for store in opened), opened
        assert {schema_version(store) for store in opened} == {migrations.LATEST_VERSION}
        session = opened[0].create_session(workdir="/")
        assert opened[-1].get_session(session.id) == session
    finally:
        for store in opened:
            if isinstance(store, Store):
                store.close()
