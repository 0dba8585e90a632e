"""Retention (``--retain-days``): ended tasks older than the cutoff go with their events and
approvals, in batches, on one node at a time; what their sessions count goes with them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aicli.actors.pruner import Pruner
from aicli.actors.scheduler import Scheduler
from aicli.contract import ApprovalKind, PrincipalCreate, TaskStatus
from aicli.errors import ApprovalNotFound, TaskNotFound
from aicli.storage import Store, open_store
from aicli.storage.fields import to_db_time
from aicli.testing import store_sql
from aicli.testing.store_sql import submit_task
from aicli.testing.waiting import wait_for

pytest_plugins = ("tests.storage_fixtures",)

NOW = datetime(2026, 12, 1, tzinfo=UTC)
OLD = NOW - timedelta(days=40)


def back_date(store: Store, task_id: str, when: datetime) -> None:
    stamp = to_db_time(when)

    store_sql.write(store, "UPDATE tasks SET created_at = ? WHERE id = ?", (stamp, task_id))
    store_sql.write(
        store,
        "UPDATE tasks SET completed_at = ? WHERE id = ? AND completed_at IS NOT NULL",
        (stamp, task_id),
    )


def ended(store: Store, session_id: str, command: str, output: str = "done") -> str:
    task, _ = submit_task(store, session_id, command=command, metadata={"m": "x" * 100})
    assert store.start_next_task(session_id).id == task.id
    store.append_events(task.id, [("message", {"text": "y" * 300})])
    store.finish_task(task.id, TaskStatus.COMPLETED, output=output)
    return task.id


def stored_bytes(store: Store, principal_id: str) -> int:
    return store.principals.get(principal_id).stored_bytes


def test_ended_tasks_older_than_the_cutoff_go_with_their_events_and_approvals(
    store: Store, tmp_path: Path
) -> None:
    owner = store.principals.create(PrincipalCreate(name="alice"))
    session = store.create_session(workdir=str(tmp_path), owner=owner.id)
    fresh_use = stored_bytes(store, owner.id)
    old = [ended(store, session.id, f"old {n}", output="z" * 1000) for n in range(5)]
    # An approval of an old task, decided: it goes with its task.
    task, _ = submit_task(store, session.id, command="asked")
    store.start_next_task(session.id)
    approval = store.approvals.request(
        session_id=session.id,
        task_id=task.id,
        kind=ApprovalKind.TOOL,
        tool_name="Bash",
        given={"command": "ls"},
        suggestions=[],
    )
    store.finish_task(task.id, TaskStatus.FAILED, error="no")
    old.append(task.id)
    for task_id in old:
        back_date(store, task_id, OLD)
    before_recent = stored_bytes(store, owner.id)
    recent = ended(store, session.id, "recent")
    pending, _ = submit_task(store, session.id, command="waits")
    kept_use = stored_bytes(store, owner.id) - before_recent
    back_date(store, pending.id, OLD)  # never ended: never pruned, however old
    assert store.get_task(old[0]).status == TaskStatus.COMPLETED  # kept by the ended cache

    pruned = store.retention.prune(NOW - timedelta(days=30), batch=2)

    assert pruned.tasks == 6 and not pruned.skipped
    for task_id in old:
        with pytest.raises(TaskNotFound):
            store.get_task(task_id)
        with pytest.raises(TaskNotFound):
            store.list_events(task_id)
    with pytest.raises(ApprovalNotFound):
        store.approvals.get(approval.id)
    assert store.get_task(recent).status == TaskStatus.COMPLETED
    assert store.get_task(pending.id).status == TaskStatus.PENDING
    counts = store.get_session(session.id).task_counts
    assert (counts.completed, counts.failed, counts.pending) == (1, 0, 1)
    # What the session stores is what it stored before the old tasks, and the kept ones.
    assert before_recent - fresh_use > 5 * 1000
    assert stored_bytes(store, owner.id) == fresh_use + kept_use
    assert store.retention.prune(NOW - timedelta(days=30)).tasks == 0


def test_closed_sessions_lose_their_transcripts_open_ones_keep_them(
    store: Store, tmp_path: Path
) -> None:
    closed = store.create_session(workdir=str(tmp_path))
    open_one = store.create_session(workdir=str(tmp_path))
    for session in (closed, open_one):
        store.transcripts.append(session.id, "c", 0, b"x" * 100)
    store.close_session(closed.id, "closed")
    sql = "UPDATE sessions SET updated_at = ? WHERE id IN (?, ?)"
    stamp = to_db_time(OLD)
    store_sql.write(store, sql, (stamp, closed.id, open_one.id))
    assert store.retention.prune(NOW - timedelta(days=30)).transcript_chunks == 1
    assert store.transcripts.load(closed.id, "c") == b""
    assert store.transcripts.load(open_one.id, "c") == b"x" * 100


@pytest.mark.postgres
def test_one_node_prunes_at_a_time(postgres_database, tmp_path: Path) -> None:
    from aicli.testing.postgres import fresh_schema_url

    url = fresh_schema_url(postgres_database)
    first, second = open_store(url), open_store(url)
    try:
        session = first.create_session(workdir=str(tmp_path))
        task_id = ended(first, session.id, "old")
        back_date(first, task_id, OLD)
        holder = first.engine

        def hold_and_try() -> object:
            holder.execute("SELECT pg_advisory_xact_lock(?)", (0x41_49_43_52_54,))
            return second.retention.prune(NOW)

        assert holder.write(hold_and_try).skipped
        assert first.get_task(task_id).status == TaskStatus.COMPLETED
        assert second.retention.prune(NOW).tasks == 1
    finally:
        first.close()
        second.close()


def test_the_pruner_runs_from_the_scheduler(store: Store, tmp_path: Path) -> None:
    session = store.create_session(workdir=str(tmp_path))
    task_id = ended(store, session.id, "old")
    back_date(store, task_id, OLD)
    scheduler = Scheduler()
    pruner = Pruner.start(store, scheduler, 30, first_s=0, every_s=3600, clock=lambda: NOW)
    try:

        def gone() -> bool:
            try:
                store.get_task(task_id)
            except TaskNotFound:
                return True
            return False

        wait_for(gone, timeout=10, what="the pruner's first round")
        assert len(scheduler) == 1  # the next round, an hour on
    finally:
        pruner.stop(timeout=5)
        scheduler.stop()


def test_retain_days_is_a_setting_a_flag_and_a_variable() -> None:
    from aicli.cli import build_parser
    from aicli.settings import Settings

    assert Settings.resolve(environ={}).retain_days == 0  # off
    assert Settings.resolve(environ={"AICLI_RETAIN_DAYS": "7.5"}).retain_days == 7.5
    assert build_parser().parse_args(["serve", "--retain-days", "30"]).retain_days == 30.0


def test_a_runtime_with_retain_days_prunes_soon_after_its_start(
    make_runtime, tmp_path: Path, monkeypatch
) -> None:
    from aicli.actors import pruner

    monkeypatch.setattr(pruner, "FIRST_S", 0.0)
    url = f"sqlite:///{tmp_path}/aicli.db"
    store = open_store(url)
    session = store.create_session(workdir=str(tmp_path))
    task_id = ended(store, session.id, "old")
    back_date(store, task_id, datetime.now(UTC) - timedelta(days=40))
    store.close()
    runtime = make_runtime(database_url=url, retain_days=30)

    def gone() -> bool:
        try:
            runtime.get_task(task_id)
        except TaskNotFound:
            return True
        return False

    wait_for(gone, timeout=10, what="the runtime's pruner to prune the old task")


def test_a_task_pruned_by_another_node_is_gone_from_this_ones_cache(
    postgres_database, tmp_path: Path
) -> None:
    """Each node keeps the ended tasks it read; only the pruning node dropped them, so the
    others went on answering GET /tasks/{id} of a deleted task (whose events were 404)."""
    from aicli.testing.postgres import fresh_schema_url

    url = fresh_schema_url(postgres_database)
    reader, pruner = open_store(url), open_store(url)
    try:
        session = reader.create_session(workdir=str(tmp_path))
        task_id = ended(reader, session.id, "old")
        back_date(reader, task_id, OLD)
        assert reader.get_task(task_id).status == TaskStatus.COMPLETED  # now kept by the reader
        assert pruner.retention.prune(NOW).tasks == 1
        with pytest.raises(TaskNotFound):
            reader.get_task(task_id)
        with pytest.raises(TaskNotFound):
            reader.get_task(task_id)
    finally:
        reader.close()
        pruner.close()


def test_the_idempotency_key_of_a_pruned_task_is_free_again(store: Store, tmp_path: Path) -> None:
    """As the README says: a key stands for its task as long as the task is kept."""
    session = store.create_session(workdir=str(tmp_path))
    first, created = submit_task(store, session.id, command="once", idempotency_key="k")
    assert created
    store.start_next_task(session.id)
    store.finish_task(first.id, TaskStatus.COMPLETED, output="done")
    back_date(store, first.id, OLD)
    assert submit_task(store, session.id, command="once", idempotency_key="k")[0].id == first.id
    assert store.retention.prune(NOW).tasks == 1
    again, created = submit_task(store, session.id, command="once", idempotency_key="k")
    assert created and again.id != first.id
