"""What each part holds is bounded by bytes: pages of tasks and events, the ended-task
cache, the event tails, and the SSE frames shared among streams."""

from __future__ import annotations

import gc
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aicli.actors import event_tail
from aicli.actors.event_tail import EventTails
from aicli.contract import ApprovalKind, Event, Task, TaskStatus
from aicli.http.frames import Frames
from aicli.storage import Store, paging
from aicli.storage.ended import EndedTasks
from aicli.testing.store_sql import submit_task

pytest_plugins = ("tests.storage_fixtures",)

BUDGET = 10_000
ROW = 4_000  # three rows fit a page: 0, 4000 and 8000 before them are under the budget


@pytest.fixture
def small_pages(monkeypatch) -> None:
    monkeypatch.setattr(paging, "PAGE_BYTES", BUDGET)


def test_a_page_of_tasks_stops_at_its_bytes_and_the_cursor_goes_on(
    store: Store, tmp_path: Path, small_pages
) -> None:
    session = store.create_session(workdir=str(tmp_path))
    created = [
        submit_task(store, session.id, command="c", metadata={"blob": str(n) * ROW})[0].id
        for n in range(8)
    ]
    small = submit_task(store, session.id, command="small")[0].id
    for statuses in (None, ["pending"], ["pending", "cancelled"]):
        seen, cursor, sizes = [], None, []
        while True:
            page = store.list_tasks(status=statuses, limit=200, cursor=cursor, order="asc")
            seen += [task.id for task in page.data]
            sizes.append(len(page.data))
            if not page.has_more:
                break
            cursor = page.next_cursor
        assert seen == [*created, small], statuses
        assert sizes == [3, 3, 3], statuses


def test_a_page_of_events_stops_at_its_bytes(store: Store, tmp_path: Path, small_pages) -> None:
    session = store.create_session(workdir=str(tmp_path))
    task, _ = submit_task(store, session.id, command="c")
    store.append_events(task.id, [("message", {"text": "x" * ROW}) for _ in range(7)])
    events, more = store.event_page(task.id, limit=1000)
    # The pending event is small: it, and two large ones before the budget is passed.
    assert [event.seq for event in events] == [1, 2, 3, 4] and more
    seqs, after = [], 0
    while True:
        events, more = store.event_page(task.id, after=after, limit=1000)
        seqs += [event.seq for event in events]
        after = seqs[-1]
        if not more:
            break
    assert seqs == list(range(1, 9))
    assert store.event_page(task.id, after=8, limit=5) == ([], False)


def test_the_ended_task_cache_counts_metadata() -> None:
    cache = EndedTasks()
    heavy = Task(
        id="t1",
        session_id="s",
        command="c",
        status=TaskStatus.COMPLETED,
        created_at=datetime.now(UTC),
        metadata={"blob": "x" * 1_000_000},
    )
    cache.keep(heavy)
    del heavy  # a large one is shared while held (storage.ended), never kept
    gc.collect()
    assert cache.get("t1") is None


class BigEvents:
    """A store whose log holds large events, counting its reads."""

    def __init__(self, count: int, size: int) -> None:
        now = datetime.now(UTC)
        self.log = [
            Event(seq=n, type="assistant", created_at=now, data={"text": "x" * size})
            for n in range(1, count + 1)
        ]
        self.reads = 0
        self.lock = threading.Lock()

    def event_page(self, task_id: str, *, after: int, limit: int) -> tuple[list[Event], bool]:
        with self.lock:
            self.reads += 1
        found = [event for event in self.log if event.seq > after][:limit]
        return found, len(found) < len([e for e in self.log if e.seq > after])


def test_event_tails_are_bounded_by_size(monkeypatch) -> None:
    monkeypatch.setattr(event_tail, "MAX_TAIL_CHARS", 3 * 1000)
    monkeypatch.setattr(event_tail, "MAX_CHARS", 5 * 1000)
    store = BigEvents(6, 990)
    tails = EventTails(store)
    assert [event.seq for event in tails.after("a", 0, None, version=1)] == [1, 2, 3, 4, 5, 6]
    kept = tails._tails["a"]
    assert kept.chars <= 3000 and kept.seqs == [5, 6]
    tails.after("b", 0, None, version=1)
    tails.after("c", 0, None, version=1)
    tails.after("c", 6, None, version=1)
    # Together, past their bound at the next read: the least recently read tail went first.
    assert list(tails._tails) == ["b", "c"]


def test_many_streams_share_one_read_and_one_frame_of_a_large_event() -> None:
    store = BigEvents(3, 1_000_000)
    frames = Frames(lambda task_id, after: store.event_page(task_id, after=after, limit=200)[0])
    start = threading.Barrier(20)
    got: list[list] = []

    def stream() -> None:
        start.wait(5)
        got.append(frames.after("t", 0))

    threads = [threading.Thread(target=stream) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(got) == 20
    # A stream that came while the read was building its frames takes the run built so
    # far (and reads on from its end): every page is a start of the one log, frame for frame.
    whole = max(got, key=len)
    assert [frame.seq for frame in whole] == [1, 2, 3]
    assert all(frame is whole[n] for page in got for n, frame in enumerate(page))
    assert store.reads <= 3  # one, bar streams that came after the first read ended
    assert frames.of("t", store.log[0]) is whole[0]
    # Held while streams send it, never kept for streams to come.
    got.clear()
    del whole
    gc.collect()
    assert frames.after("t", 0)[0] is not None and store.reads >= 2


def test_a_page_of_approvals_stops_at_its_bytes(store: Store, tmp_path: Path, small_pages) -> None:
    session = store.create_session(workdir=str(tmp_path))
    task, _ = submit_task(store, session.id, command="c")
    store.start_next_task(session.id)
    made = [
        store.approvals.request(
            session_id=session.id,
            task_id=task.id,
            kind=ApprovalKind.TOOL,
            tool_name="Write",
            given={"content": str(n) * ROW},
            suggestions=[],
        ).id
        for n in range(5)
    ]
    seen, cursor, sizes = [], None, []
    while True:
        page = store.approvals.list(limit=200, cursor=cursor, order="asc")
        seen += [approval.id for approval in page.data]
        sizes.append(len(page.data))
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert seen == made and sizes == [3, 2]
