"""Ended tasks are kept in memory once read: the same answer as their rows, never a stale one."""

from __future__ import annotations

from pathlib import Path

import pytest

from aicli.contract import TaskStatus
from aicli.storage import Store, ended
from tests.store_reads import tasks_by_id

pytest_plugins = ("tests.storage_fixtures",)


def test_an_ended_task_is_answered_as_its_row_says_and_a_live_one_is_always_read(
    store: Store, tmp_path: Path
) -> None:
    session = store.create_session(workdir=str(tmp_path))
    done, live = (store.create_task(session_id=session.id, command=c)[0] for c in ("a", "b"))
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
        task = store.create_task(session_id=session.id, command="c")[0]
        store.start_next_task(session.id)
        tasks.append(store.finish_task(task.id, TaskStatus.COMPLETED, output=output))
    for task in tasks:
        kept.keep(task)
    assert [kept.get(t.id) is not None for t in tasks] == [False, True, True, True, False]


def test_a_row_read_while_running_is_shown_as_read_though_the_task_has_ended_since(
    store: Store, tmp_path: Path
) -> None:
    session = store.create_session(workdir=str(tmp_path))
    task, _ = store.create_task(session_id=session.id, command="c")
    store.start_next_task(session.id)
    engine = store._engine
    sql = f"SELECT {ended.TASK_COLUMNS} FROM tasks WHERE id = ?"
    running_row = engine.read(lambda: engine.execute(sql, (task.id,)).fetchone())
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
        task, _ = store.create_task(
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
    fresh = ended.EndedTasks()  # nothing kept: every row is built from its JSON
    store._ended = fresh
    for order in ("desc", "asc"):
        page = store.list_tasks(session_id=session.id, order=order, limit=3)
        rest = store.list_tasks(session_id=session.id, order=order, cursor=page.next_cursor)
        listed = [*page.data, *rest.data]
        assert [t.id for t in listed] == (made[::-1] if order == "desc" else made)
        assert {t.id: t for t in listed} == tasks_by_id(store, made)
    # Floats are kept to the 15 digits every double keeps through text.
    assert store.get_task(made[0]).cost_usd == 0.3
