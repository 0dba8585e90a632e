"""Who runs each session: claims, epochs, fencing and rescue, at the store, on both backends.

A node claims a session (each claim a higher epoch), writes for it naming that
epoch, and lets it go; a claim taken over since makes its writes match no row
(``NotOwner``). Rescue takes the sessions of nodes whose lease ran out. Leases
run out by the database's clock: a test shortens one (``renew`` with a tiny
ttl) and waits, bounded, until the database no longer lists the node.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aicli.contract import Node, Session, Task, TaskStatus
from aicli.errors import NotOwner, SessionNotFound
from aicli.storage import Store
from aicli.storage.ownership import RESCUE_BATCH, lost_node_error
from aicli.testing import store_sql
from aicli.testing.store_sql import submit_task
from aicli.testing.waiting import wait_for

pytest_plugins = ("tests.storage_fixtures",)

LONG = 60.0  # a lease that lasts for the whole test
TIMEOUT = 10.0  # every wait of this module is bound by it


# helpers


def _session(store: Store, tmp_path: Path) -> Session:
    return store.create_session(workdir=str(tmp_path))


def _submit(store: Store, session_id: str, count: int) -> list[Task]:
    return [submit_task(store, session_id=session_id, command=f"c{i}")[0] for i in range(count)]


def _live_ids(store: Store) -> set[str]:
    return {node.id for node in store.nodes.live()}


def _run_out(store: Store, node: Node) -> None:
    """End the node's lease a moment from now (the database's now) and wait until it has."""
    assert store.nodes.renew(node.id, 0.05, 0, 0) is not None
    wait_for(lambda: node.id not in _live_ids(store), TIMEOUT, f"the lease of {node.id} to end")


def _node_rows(store: Store) -> set[str]:
    """Every node row, live or not."""
    return {row[0] for row in store_sql.rows(store, "SELECT id FROM nodes")}


def _epoch(store: Store, session_id: str) -> int:
    return store_sql.value(store, "SELECT owner_epoch FROM sessions WHERE id = ?", (session_id,))


def _failures(store: Store, task_id: str) -> list[dict[str, Any]]:
    """The data of the task's ``status`` events that say it failed."""
    return [
        event.data
        for event in store.list_events(task_id)
        if event.type == "status" and event.data.get("status") == TaskStatus.FAILED
    ]


def _running_on(
    store: Store, tmp_path: Path, node: Node, pending: int = 0
) -> tuple[str, int, Task]:
    """A session claimed by ``node`` with a task running under that claim (and ``pending`` more
    waiting): its id, the claim's epoch, the running task."""
    session = _session(store, tmp_path)
    _submit(store, session.id, 1 + pending)
    epoch = store.ownership.claim(session.id, node.id)
    assert epoch is not None
    task = store.start_next_task(session.id, epoch=epoch)
    assert task is not None and task.status == TaskStatus.RUNNING
    return session.id, epoch, task


def _in_threads(actions: list[Callable[[], Any]]) -> list[Any]:
    """Run ``actions`` in threads released at once; each one's result (or exception), in order."""
    gate = threading.Barrier(len(actions), timeout=TIMEOUT)
    results: list[Any] = [None] * len(actions)

    def run(index: int) -> None:
        try:
            gate.wait()
            results[index] = actions[index]()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(actions))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + TIMEOUT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "threads hung"
    return results


# claims


def test_a_claim_holds_while_its_lease_lasts_and_each_claim_raises_the_epoch(
    store: Store, tmp_path: Path
) -> None:
    a = store.nodes.join(None, LONG)
    b = store.nodes.join(None, LONG)
    session = _session(store, tmp_path)
    assert session.node is None
    assert not store.ownership.owner_live(session.id, b.id)  # nobody holds it

    first = store.ownership.claim(session.id, a.id)
    assert first is not None and first > 0
    assert store.get_session(session.id).node == a.id
    assert store.ownership.owner_live(session.id, b.id)  # a live node other than B holds it
    assert not store.ownership.owner_live(session.id, a.id)  # only A itself holds it

    assert store.ownership.claim(session.id, b.id) is None
    assert store.get_session(session.id).node == a.id
    assert _epoch(store, session.id) == first  # a refused claim changes nothing

    assert store.ownership.claim(session.id, a.id) == first + 1
    assert store.get_session(session.id).node == a.id

    with pytest.raises(SessionNotFound):
        store.ownership.claim("no-such-session", a.id)


@pytest.mark.parametrize("ending", ["lease ran out", "node left"])
def test_a_claim_from_a_dead_node_fails_its_running_task_once_and_keeps_the_queue(
    store: Store, tmp_path: Path, ending: str
) -> None:
    a = store.nodes.join(None, LONG)
    b = store.nodes.join(None, LONG)
    session_id, old, running = _running_on(store, tmp_path, a, pending=2)
    pending = store.pending_task_ids(session_id)
    assert len(pending) == 2
    if ending == "node left":
        store.nodes.leave(a.id)
    else:
        _run_out(store, a)
    assert not store.ownership.owner_live(session_id, b.id)

    new = store.ownership.claim(session_id, b.id)
    assert new is not None and new > old
    assert store.get_session(session_id).node == b.id

    failed = store.get_task(running.id)
    assert (failed.status, failed.error) == (TaskStatus.FAILED, lost_node_error(a.id))
    assert _failures(store, running.id) == [
        {"status": TaskStatus.FAILED, "error": lost_node_error(a.id)}
    ]
    assert store.list_events(running.id)[-1].type == "status"
    assert store.pending_task_ids(session_id) == pending  # pending work waits for B
    assert store.running_task_of(session_id) is None

    # B claiming again (from itself) fails nothing more.
    assert store.ownership.claim(session_id, b.id) == new + 1
    assert len(_failures(store, running.id)) == 1
    assert store.pending_task_ids(session_id) == pending


def test_the_writes_of_a_claim_taken_over_are_refused_and_change_nothing(
    store: Store, tmp_path: Path
) -> None:
    a = store.nodes.join(None, LONG)
    b = store.nodes.join(None, LONG)
    session_id, old, failed = _running_on(store, tmp_path, a, pending=2)
    _run_out(store, a)
    new = store.ownership.claim(session_id, b.id)
    assert new is not None and new > old
    pending = store.pending_task_ids(session_id)

    # A's start: refused, nothing starts.
    with pytest.raises(NotOwner) as caught:
        store.start_next_task(session_id, epoch=old)
    assert caught.value.details == {"epoch": old}
    assert store.pending_task_ids(session_id) == pending
    assert store.running_task_of(session_id) is None

    # A's events for the task it ran (failed by the takeover): refused, none added.
    before = store.list_events(failed.id)
    with pytest.raises(NotOwner):
        store.append_events(failed.id, [("stream", {"text": "late"})], epoch=old)
    assert store.list_events(failed.id) == before

    # B starts the next task; A can neither write to it nor finish it.
    task = store.start_next_task(session_id, epoch=new)
    assert task is not None and task.id == pending[0]
    before = store.list_events(task.id)
    with pytest.raises(NotOwner):
        store.append_events(task.id, [("stream", {"text": "stale"})], epoch=old)
    assert store.list_events(task.id) == before
    with pytest.raises(NotOwner):
        store.finish_task(task.id, TaskStatus.COMPLETED, output="stale", epoch=old)
    assert store.get_task(task.id) == task
    assert store.list_events(task.id) == before
    assert store.get_session(session_id).task_counts.running == 1

    # The same calls with B's epoch work.
    added = store.append_events(task.id, [("stream", {"text": "fresh"})], epoch=new)
    assert [event.seq for event in added] == [before[-1].seq + 1]
    done = store.finish_task(task.id, TaskStatus.COMPLETED, output="ok", epoch=new)
    assert (done.status, done.output) == (TaskStatus.COMPLETED, "ok")
    assert store.list_events(task.id)[-1].data == {"status": TaskStatus.COMPLETED}
    assert store.pending_task_ids(session_id) == pending[1:]


def test_a_release_lets_go_only_of_the_current_claim(store: Store, tmp_path: Path) -> None:
    a = store.nodes.join(None, LONG)
    b = store.nodes.join(None, LONG)
    session = _session(store, tmp_path)
    idle = _session(store, tmp_path)  # claimed and released with no work waiting
    _submit(store, session.id, 2)

    first = store.ownership.claim(session.id, a.id)
    assert first is not None
    second = store.ownership.claim(session.id, a.id)
    assert second == first + 1
    assert store.ownership.release(session.id, a.id, first) is False  # A's own older claim
    assert store.ownership.release(session.id, b.id, second) is False  # not B's to release
    assert store.get_session(session.id).node == a.id
    assert store.ownership.unclaimed_with_pending() == []

    _run_out(store, a)
    taken = store.ownership.claim(session.id, b.id)
    assert taken is not None and taken > second
    assert store.ownership.release(session.id, a.id, second) is False  # taken over since
    assert store.get_session(session.id).node == b.id
    assert _epoch(store, session.id) == taken

    assert store.ownership.release(session.id, b.id, taken) is True
    assert store.get_session(session.id).node is None
    assert store.ownership.release(session.id, b.id, taken) is False  # nothing left to let go
    assert not store.ownership.owner_live(session.id, a.id)

    idle_epoch = store.ownership.claim(idle.id, b.id)
    assert idle_epoch is not None
    assert store.ownership.release(idle.id, b.id, idle_epoch) is True
    assert store.get_session(idle.id).node is None
    assert store.ownership.unclaimed_with_pending() == [session.id]  # only where work waits

    # Released, the session is anyone's with a lease: the next claim goes on counting.
    c = store.nodes.join(None, LONG)
    assert store.ownership.claim(session.id, c.id) == taken + 1
    assert store.ownership.unclaimed_with_pending() == []


def test_a_node_whose_lease_ran_out_cannot_claim(store: Store, tmp_path: Path) -> None:
    session = _session(store, tmp_path)
    short = store.nodes.join(None, 0.2)
    wait_for(lambda: short.id not in _live_ids(store), TIMEOUT, "the short lease to end")
    assert store.ownership.claim(session.id, short.id) is None

    gone = store.nodes.join(None, LONG)
    store.nodes.leave(gone.id)
    assert store.ownership.claim(session.id, gone.id) is None
    assert store.ownership.claim(session.id, "never-joined") is None

    # Not even a session it holds already.
    holder = store.nodes.join(None, LONG)
    assert store.ownership.claim(session.id, holder.id) is not None
    _run_out(store, holder)
    assert store.ownership.claim(session.id, holder.id) is None
    assert store.get_session(session.id).node == holder.id
    assert _epoch(store, session.id) == 1


def test_a_closed_session_cannot_be_claimed(store: Store, tmp_path: Path) -> None:
    a = store.nodes.join(None, LONG)
    fresh = _session(store, tmp_path)
    held = _session(store, tmp_path)
    epoch = store.ownership.claim(held.id, a.id)
    assert epoch is not None
    for session in (fresh, held):
        store.close_session(session.id, "closed")
    assert store.ownership.claim(fresh.id, a.id) is None
    assert store.ownership.claim(held.id, a.id) is None  # not even by its holder
    assert _epoch(store, fresh.id) == 0 and _epoch(store, held.id) == epoch
    assert store.ownership.release(held.id, a.id, epoch) is True  # letting go still works


# rescue


def test_rescue_takes_the_sessions_of_dead_nodes_and_of_no_node(
    store: Store, tmp_path: Path
) -> None:
    me = store.nodes.join(None, LONG)
    dead = store.nodes.join(None, LONG)
    live = store.nodes.join(None, LONG)
    orphan, orphan_epoch, orphan_task = _running_on(store, tmp_path, dead, pending=1)
    orphan_pending = store.pending_task_ids(orphan)
    idle_orphan = _session(store, tmp_path)  # a dead node's, nothing in it
    assert store.ownership.claim(idle_orphan.id, dead.id) is not None
    elsewhere, _, elsewhere_task = _running_on(store, tmp_path, live)
    mine, _, mine_task = _running_on(store, tmp_path, me)

    # A task running with no claim at all (as before nodes).
    unclaimed = _session(store, tmp_path)
    _submit(store, unclaimed.id, 2)
    unclaimed_task = store.start_next_task(unclaimed.id)
    assert unclaimed_task is not None
    # No claim and only pending work: nothing to rescue, the next claim runs it.
    waiting = _session(store, tmp_path)
    _submit(store, waiting.id, 1)

    _run_out(store, dead)
    rescued = store.ownership.rescue(me.id)
    assert sorted(rescued) == sorted([orphan, idle_orphan.id, unclaimed.id])

    task = store.get_task(orphan_task.id)
    assert (task.status, task.error) == (TaskStatus.FAILED, lost_node_error(dead.id))
    assert _failures(store, orphan_task.id) == [
        {"status": TaskStatus.FAILED, "error": lost_node_error(dead.id)}
    ]
    assert store.pending_task_ids(orphan) == orphan_pending
    assert store.get_session(orphan).node is None
    assert _epoch(store, orphan) == orphan_epoch + 1
    with pytest.raises(NotOwner):  # the dead node's claim is over
        store.start_next_task(orphan, epoch=orphan_epoch)

    task = store.get_task(unclaimed_task.id)
    assert (task.status, task.error) == (TaskStatus.FAILED, lost_node_error(None))
    assert len(_failures(store, unclaimed_task.id)) == 1
    assert len(store.pending_task_ids(unclaimed.id)) == 1

    for session_id, task_id, node in (
        (elsewhere, elsewhere_task.id, live),
        (mine, mine_task.id, me),
    ):
        assert store.get_task(task_id).status == TaskStatus.RUNNING
        assert store.get_session(session_id).node == node.id
    assert store.get_session(waiting.id).node is None
    assert store.pending_task_ids(waiting.id) != []

    assert set(store.ownership.unclaimed_with_pending()) == {orphan, unclaimed.id, waiting.id}
    assert dead.id not in _node_rows(store)  # dead, and it holds no session any more
    assert _node_rows(store) == {me.id, live.id}

    assert store.ownership.rescue(me.id) == []  # idempotent
    assert len(_failures(store, orphan_task.id)) == 1
    assert _epoch(store, orphan) == orphan_epoch + 1


def test_rescue_skips_a_live_node_and_keeps_a_dead_node_row_while_it_holds_a_session(
    store: Store, tmp_path: Path
) -> None:
    me = store.nodes.join(None, LONG)
    empty = store.nodes.join(None, LONG)  # dead, holding nothing: its row goes
    _run_out(store, empty)
    assert store.ownership.rescue(me.id) == []
    assert empty.id not in _node_rows(store)

    # My own sessions are mine to keep, even while my lease has run out.
    session_id, epoch, task = _running_on(store, tmp_path, me)
    _run_out(store, me)
    assert store.ownership.rescue(me.id) == []
    assert store.get_task(task.id).status == TaskStatus.RUNNING
    assert store.get_session(session_id).node == me.id
    assert me.id in _node_rows(store)
    # Someone else's rescue (or none's) takes them.
    assert store.ownership.rescue(None) == [session_id]
    assert store.get_task(task.id).error == lost_node_error(me.id)
    assert _epoch(store, session_id) == epoch + 1
    assert _node_rows(store) == set()


def test_rescue_takes_more_than_a_batch_across_calls(store: Store, tmp_path: Path) -> None:
    me = store.nodes.join(None, LONG)
    dead = store.nodes.join(None, LONG)
    count = RESCUE_BATCH + 5
    sessions = []
    for _ in range(count):
        session = _session(store, tmp_path)
        assert store.ownership.claim(session.id, dead.id) is not None
        sessions.append(session.id)
    _, _, task = _running_on(store, tmp_path, dead)
    sessions.append(task.session_id)
    _run_out(store, dead)

    first = store.ownership.rescue(me.id)
    assert len(first) == RESCUE_BATCH
    assert dead.id in _node_rows(store)  # it still holds sessions
    second = store.ownership.rescue(me.id)
    assert len(second) == count + 1 - RESCUE_BATCH
    assert sorted(first + second) == sorted(sessions)
    assert not set(first) & set(second)
    assert store.ownership.rescue(me.id) == []
    assert dead.id not in _node_rows(store)
    assert all(store.get_session(session_id).node is None for session_id in sessions)
    assert len(_failures(store, task.id)) == 1


# the other node rows


def test_owner_live_and_forget_other_nodes(store: Store, tmp_path: Path) -> None:
    me = store.nodes.join(None, LONG)
    other = store.nodes.join(None, LONG)
    dead = store.nodes.join(None, LONG)
    session_id, _, task = _running_on(store, tmp_path, other)
    assert store.ownership.owner_live(session_id, me.id)
    assert not store.ownership.owner_live(session_id, other.id)
    assert not store.ownership.owner_live("no-such-session", me.id)
    _run_out(store, dead)

    assert store.ownership.forget_other_nodes(me.id) == 2  # live or not
    assert _node_rows(store) == {me.id}
    assert store.ownership.forget_other_nodes(me.id) == 0
    # The session still names its forgotten node, which no longer counts as live ...
    assert store.get_session(session_id).node == other.id
    assert not store.ownership.owner_live(session_id, me.id)
    # ... so it can be claimed, its running task failing for that node.
    assert store.ownership.claim(session_id, me.id) is not None
    assert store.get_task(task.id).error == lost_node_error(other.id)


# PostgreSQL: at once from several connections


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.postgres
def test_two_nodes_claiming_one_session_at_once_one_wins(store: Store, tmp_path: Path) -> None:
    a = store.nodes.join(None, LONG)
    b = store.nodes.join(None, LONG)
    for _ in range(10):
        session = _session(store, tmp_path)
        results = _in_threads(
            [
                lambda s=session.id: store.ownership.claim(s, a.id),
                lambda s=session.id: store.ownership.claim(s, b.id),
            ]
        )
        assert not any(isinstance(result, BaseException) for result in results), results
        won = [node.id for node, epoch in zip((a, b), results, strict=True) if epoch is not None]
        assert len(won) == 1, results
        assert [epoch for epoch in results if epoch is not None] == [1]
        assert store.get_session(session.id).node == won[0]
        assert _epoch(store, session.id) == 1


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.postgres
def test_two_rescuers_at_once_fail_each_running_task_exactly_once(
    store: Store, tmp_path: Path
) -> None:
    rescuers = [store.nodes.join(None, LONG), store.nodes.join(None, LONG)]
    dead = store.nodes.join(None, LONG)
    running = {}
    for _ in range(50):
        session_id, _, task = _running_on(store, tmp_path, dead, pending=1)
        running[session_id] = task.id
    _run_out(store, dead)

    def rescue_all(me: str) -> list[str]:
        rescued: list[str] = []
        while batch := store.ownership.rescue(me):
            rescued += batch
        return rescued

    results = _in_threads([lambda node=node: rescue_all(node.id) for node in rescuers])
    assert not any(isinstance(result, BaseException) for result in results), results
    assert set(results[0]) | set(results[1]) == set(running)
    for session_id, task_id in running.items():
        assert _failures(store, task_id) == [
            {"status": TaskStatus.FAILED, "error": lost_node_error(dead.id)}
        ], session_id
        assert store.get_task(task_id).status == TaskStatus.FAILED
        assert store.get_session(session_id).node is None
        assert len(store.pending_task_ids(session_id)) == 1
        counts = store.get_session(session_id).task_counts
        assert (counts.running, counts.failed, counts.pending) == (0, 1, 1)
    assert dead.id not in _node_rows(store)


def _lock_waiters(store: Store) -> int:
    """How many connections to the test's database wait for a lock now."""
    sql = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return store_sql.value(store, sql)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.postgres
@pytest.mark.parametrize("write", ["start_next_task", "append_events", "finish_task"])
def test_a_stale_write_waiting_on_the_takeover_is_refused_once_it_commits(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: str
) -> None:
    """A's write arrives while B's claim holds the rows (its task failed, the epoch not yet
    committed): it waits, and once the claim commits it must match nothing."""
    a = store.nodes.join(None, LONG)
    b = store.nodes.join(None, LONG)
    session_id, old, task = _running_on(store, tmp_path, a, pending=1)
    _run_out(store, a)

    inside, go = threading.Event(), threading.Event()
    fail_running = store.outcomes.fail_running_within

    def paused(session: str, error: str) -> str | None:
        failed = fail_running(session, error)
        inside.set()
        assert go.wait(TIMEOUT), "the takeover was never let go on"
        return failed

    monkeypatch.setattr(store.outcomes, "fail_running_within", paused)
    stale: dict[str, Callable[[], Any]] = {
        "start_next_task": lambda: store.start_next_task(session_id, epoch=old),
        "append_events": lambda: store.append_events(
            task.id, [("stream", {"text": "late"})], epoch=old
        ),
        "finish_task": lambda: store.finish_task(
            task.id, TaskStatus.COMPLETED, output="late", epoch=old
        ),
    }
    results: dict[str, Any] = {}

    def run(name: str, action: Callable[[], Any]) -> None:
        try:
            results[name] = action()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            results[name] = exc

    claimer = threading.Thread(
        target=run, args=("claim", lambda: store.ownership.claim(session_id, b.id)), daemon=True
    )
    claimer.start()
    try:
        assert inside.wait(TIMEOUT), "the takeover never failed the running task"
        writer = threading.Thread(target=run, args=("stale", stale[write]), daemon=True)
        writer.start()
        wait_for(lambda: _lock_waiters(store) >= 1, TIMEOUT, "the stale write to wait")
    finally:
        go.set()
    claimer.join(TIMEOUT)
    writer.join(TIMEOUT)
    assert not claimer.is_alive() and not writer.is_alive(), "threads hung"

    assert isinstance(results["claim"], int) and results["claim"] > old, results
    assert isinstance(results["stale"], NotOwner), results["stale"]
    failed = store.get_task(task.id)
    assert (failed.status, failed.error, failed.output) == (
        TaskStatus.FAILED,
        lost_node_error(a.id),
        None,
    )
    events = store.list_events(task.id)
    assert events[-1].data == {"status": TaskStatus.FAILED, "error": lost_node_error(a.id)}
    assert all(event.type != "stream" for event in events)
    assert store.running_task_of(session_id) is None
    assert len(store.pending_task_ids(session_id)) == 1
