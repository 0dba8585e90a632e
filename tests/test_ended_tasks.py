"""Ended tasks are kept in memory once read: the same answer as their rows, never a stale one."""

from __future__ import annotations

import gc
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from aicli import flights
from aicli.contract import Task, TaskStatus
from aicli.storage import Store, ended, open_store
from aicli.testing import store_sql
from aicli.testing.store_sql import captured_queries, submit_task
from aicli.testing.waiting import wait_for
from tests.store_reads import tasks_by_id

pytest_plugins = ("tests.storage_fixtures",)


def test_an_ended_task_is_answered_as_its_row_says_and_a_live_one_is_always_read(
    store: Store, tmp_path: Path
) -> None:
    session = store.create_session(workdir=str(tmp_path))
    done, live = (submit_task(store, session_id=session.id, command=c)[0] for c in ("a", "b"))
    store.start_next_task(session.id)
    store.finish_task(done.id, TaskStatus.COMPLETED, output="ok")
    store.start_next_task(session.id)
    assert store.get_task(live.id).status == TaskStatus.RUNNING
    first = store.get_task(done.id)
    assert store.get_task(done.id) is first  # kept
    assert first == tasks_by_id(store, [done.id])[done.id]
    # A running task is read each time, so its end is seen at once.
    store.finish_task(live.id, TaskStatus.FAILED, error="no")
    assert store.get_task(live.id).status == TaskStatus.FAILED
    page = store.list_tasks(session_id=session.id)
    assert [t.id for t in page.data] == [live.id, done.id]
    assert page.data[1] is first
    assert {t.id: t for t in page.data} == tasks_by_id(store, [live.id, done.id])


def test_what_is_kept_is_bounded_by_count_and_by_text(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ended, "MAX_TASKS", 3)
    monkeypatch.setattr(ended, "MAX_CHARS_ONE", 100)
    kept = ended.EndedTasks()
    session = store.create_session(workdir=str(tmp_path))
    tasks = []
    for output in ["x"] * 4 + ["y" * 200]:
        task = submit_task(store, session_id=session.id, command="c")[0]
        store.start_next_task(session.id)
        tasks.append(store.finish_task(task.id, TaskStatus.COMPLETED, output=output))
    for task in tasks:
        kept.keep(task)
    ids = [t.id for t in tasks]
    del tasks, task
    gc.collect()
    # The large one was shared while held (see below), not kept.
    assert [kept.get(task_id) is not None for task_id in ids] == [False, True, True, True, False]


def test_a_large_ended_task_is_shared_while_held_and_not_read_again(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sixty long-polls woken by the end of a task with a 10 MB answer each read and built
    it: the server grew by a gigabyte. Held by anyone, it is found, not read again."""
    monkeypatch.setattr(ended, "MAX_CHARS_ONE", 100)
    session = store.create_session(workdir=str(tmp_path))
    task = submit_task(store, session_id=session.id, command="c")[0]
    store.start_next_task(session.id)
    held = store.finish_task(task.id, TaskStatus.COMPLETED, output="y" * 1000)
    with captured_queries(store) as queries:
        assert store.get_task(task.id) is held
    assert ["SELECT 1 FROM tasks" in q.sql for q in queries] == [True]  # it still exists
    del held
    gc.collect()
    again = store.get_task(task.id)
    assert again.output == "y" * 1000 and store.get_task(task.id) is again


def test_readers_of_a_task_at_once_share_one_read_of_an_ended_one() -> None:
    waiting: list[int] = []

    class Counted(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waiting.append(1)
            return super().wait(timeout)

    class Read(flights._Flight):
        def __init__(self) -> None:
            super().__init__()
            self.done = Counted()

    kept = ended.EndedTasks()
    reads: list[str] = []
    done = Task("t", "s", "c", TaskStatus.COMPLETED, "z" * 10, created_at=datetime.now(UTC))

    def read() -> Task:
        reads.append("read")
        wait_for(lambda: len(waiting) == 3, what="the others waiting for this read")
        return done

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flights, "_Flight", Read)
        with ThreadPoolExecutor(4) as pool:
            found = list(pool.map(lambda _: kept.read_once("t", read), range(4)))
    assert reads == ["read"] and all(task is done for task in found)
    # A task not ended when the read began is read again by each who waited for it.
    running = msgspec.structs.replace(done, status=TaskStatus.RUNNING)
    assert kept.read_once("t", lambda: running) is running


def test_a_row_read_while_running_is_shown_as_read_though_the_task_has_ended_since(
    store: Store, tmp_path: Path
) -> None:
    session = store.create_session(workdir=str(tmp_path))
    task, _ = submit_task(store, session_id=session.id, command="c")
    store.start_next_task(session.id)
    sql = f"SELECT {ended.TASK_COLUMNS} FROM tasks WHERE id = ?"
    (running_row,) = store_sql.rows(store, sql, (task.id,))
    store.finish_task(task.id, TaskStatus.COMPLETED, output="ok")
    store.get_task(task.id)  # now kept
    kept = ended.EndedTasks()
    kept.keep(store.get_task(task.id))
    assert kept.from_row(running_row).status == TaskStatus.RUNNING


def test_a_page_read_as_one_json_row_holds_exactly_what_the_rows_hold(
    store: Store, tmp_path: Path
) -> None:
    session = store.create_session(workdir=str(tmp_path))
    texts = ["plain", 'quo"te \\ back', "tab\tnew\nline \x01 \u2028 é 😀", ""]
    costs = [0.1 + 0.2, 1e-7, 123456.789012345678, 0.0]
    made = []
    for text, cost in zip(texts, costs, strict=True):
        task, _ = submit_task(
            store,
            session_id=session.id,
            command=text or "x",
            timeout_s=cost or None,
            metadata={"k": text},
        )
        store.start_next_task(session.id)
        store.finish_task(
            task.id, TaskStatus.COMPLETED, output=text, cost_usd=cost, usage={"input_tokens": 3}
        )
        made.append(task.id)
    fresh = open_store(store.database_url)  # nothing kept: every row is built from its JSON
    try:
        for order in ("desc", "asc"):
            page = fresh.list_tasks(session_id=session.id, order=order, limit=3)
            rest = fresh.list_tasks(session_id=session.id, order=order, cursor=page.next_cursor)
            listed = [*page.data, *rest.data]
            assert [t.id for t in listed] == (made[::-1] if order == "desc" else made)
            assert {t.id: t for t in listed} == tasks_by_id(store, made)
        # Floats are kept to the 15 digits every double keeps through text.
        assert fresh.get_task(made[0]).cost_usd == 0.3
    finally:
        fresh.close()
