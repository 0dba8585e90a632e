"""A walk over byte-bounded pages, randomized: rows of mixed sizes (some past the whole
budget), both orders, any limit, one status or several; every row comes exactly once, in
order, and each page holds at least one row and stops once its text passes the budget."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aicli.contract import Event
from aicli.storage import Store, paging
from aicli.testing.store_sql import submit_task

pytest_plugins = ("tests.storage_fixtures",)

BUDGET = 3_000
SIZES = st.sampled_from([0, 10, 900, 1_500, 2_999, 3_000, 3_001, 7_000])
ROWS = st.lists(st.tuples(SIZES, st.booleans()), min_size=1, max_size=12)


@pytest.fixture
def small_pages(monkeypatch) -> None:
    monkeypatch.setattr(paging, "PAGE_BYTES", BUDGET)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=ROWS,
    limit=st.integers(1, 5),
    order=st.sampled_from(paging.ORDERS),
    statuses=st.sampled_from([None, ("pending",), ("pending", "cancelled")]),
)
def test_a_walk_over_pages_of_tasks_takes_every_row_once(
    store: Store, tmp_path: Path, small_pages, rows, limit, order, statuses
) -> None:
    session = store.create_session(workdir=str(tmp_path))
    sizes: dict[str, int] = {}
    for size, cancel in rows:
        task, _ = submit_task(store, session.id, command="c", metadata={"m": "x" * size})
        if cancel:
            store.cancel_pending(task.id, "e")
        sizes[task.id] = len(task.command) + len(f'{{"m":"{"x" * size}"}}') + cancel
    expected = [
        t.id
        for t in sorted(
            (store.get_task(task_id) for task_id in sizes),
            key=lambda t: (t.created_at, t.id),
            reverse=order == "desc",
        )
        if statuses is None or t.status in statuses
    ]
    walked: list[str] = []
    cursor = None
    for _ in range(len(rows) + 1):
        page = store.list_tasks(
            session_id=session.id, status=statuses, limit=limit, cursor=cursor, order=order
        )
        ids = [t.id for t in page.data]
        assert ids or not expected
        assert len(ids) <= limit
        assert sum(sizes[i] for i in ids[:-1]) < BUDGET  # stopped once past it, not before
        walked += ids
        if not page.has_more:
            break
        assert len(ids) == limit or sum(sizes[i] for i in ids) >= BUDGET
        cursor = page.next_cursor
    assert walked == expected


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sizes=st.lists(SIZES, min_size=1, max_size=12), limit=st.integers(1, 5))
def test_a_walk_over_pages_of_events_takes_every_event_once(
    store: Store, tmp_path: Path, small_pages, sizes, limit
) -> None:
    session = store.create_session(workdir=str(tmp_path))
    task, _ = submit_task(store, session.id, command="c")
    store.append_events(task.id, [("message", {"text": "x" * size}) for size in sizes])
    stored = {e.seq: len(store_text(e)) for e in store.list_events(task.id)}
    walked: list[int] = []
    after = 0
    for _ in range(len(stored) + 1):
        events, more = store.event_page(task.id, after=after, limit=limit)
        seqs = [e.seq for e in events]
        assert seqs and len(seqs) <= limit
        assert sum(stored[s] for s in seqs[:-1]) < BUDGET
        walked += seqs
        if not more:
            break
        after = seqs[-1]
    assert walked == sorted(stored)


def store_text(event: Event) -> str:
    return msgspec.json.encode(event.data).decode()
