"""The actor core with a scripted Claude: the store decides, a turn belongs to its process.

These drive the runtime with ``ScriptedClaude`` (no CLI, no API), so they can
hold a turn open, kill a process mid-turn, or fail a step on cue.
"""

from __future__ import annotations

import random
import threading

import pykka
import pytest

from aicli.actors.faults import Faults
from aicli.actors.session import SessionActor
from aicli.contract import TaskStatus
from aicli.errors import DatabaseUnavailable
from aicli.testing.waiting import wait_for


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def start(start_scripted, faults):
    return lambda **settings: start_scripted(faults=faults, **settings)


@pytest.fixture
def workdirs(tmp_path_factory):
    return lambda n: [str(tmp_path_factory.mktemp("work")) for _ in range(n)]


def test_a_failed_start_commit_sends_no_prompt_and_the_task_runs_later(
    start, scripted, faults, workdirs
):
    rt = start()
    (workdir,) = workdirs(1)
    session = rt.open_session(workdir=workdir)
    faults.arm("start.before_commit", "raise")
    task = rt.submit(session.id, "only once")
    assert rt.wait(task.id, timeout=10).status == TaskStatus.COMPLETED
    assert scripted.prompts() == ["only once"]


def test_a_failure_after_the_start_commit_fails_the_task_and_retires_the_process(
    start, scripted, faults, workdirs
):
    rt = start()
    (workdir,) = workdirs(1)
    session = rt.open_session(workdir=workdir)
    faults.arm("start.after_commit", "raise")
    first = rt.submit(session.id, "first")
    second = rt.submit(session.id, "second")
    failed = rt.wait(first.id, timeout=10)
    assert failed.status == TaskStatus.FAILED
    assert "aicli failed while handling this task" in failed.error
    assert rt.wait(second.id, timeout=10).output == "done: second"
    assert scripted.prompts() == ["second"]
    assert [p.number for p in scripted.processes] == [1, 2]


def test_a_failed_event_commit_kills_the_turn_so_the_next_task_gets_its_own_answer(
    start, scripted, faults, workdirs
):
    rt = start()
    (workdir,) = workdirs(1)
    session = rt.open_session(workdir=workdir)
    faults.arm("stream.event", "raise")
    first = rt.submit(session.id, "[[slow:0.3]] first")
    second = rt.submit(session.id, "second")
    assert rt.wait(first.id, timeout=10).status == TaskStatus.FAILED
    done = rt.wait(second.id, timeout=10)
    assert done.output == "done: second"
    assert not scripted.overlaps


def test_a_lone_surrogate_the_store_refuses_fails_only_its_own_task(start, scripted, workdirs):
    """The scripted process hands the actor a lone surrogate unsanitised (the real reader
    replaces them): the generation rule must still keep the next task's answer its own."""
    rt = start()
    (workdir,) = workdirs(1)
    session = rt.open_session(workdir=workdir)
    bad = rt.submit(session.id, "[[surrogate]]")
    good = rt.submit(session.id, "next")
    failed = rt.wait(bad.id, timeout=10)
    assert failed.status == TaskStatus.FAILED and "its Claude turn was stopped" in failed.error
    assert rt.wait(good.id, timeout=10).output == "done: next"
    assert rt.cancel(bad.id).status == TaskStatus.FAILED  # settled, not stuck running


def test_a_commit_that_keeps_failing_keeps_the_turn_until_it_is_recorded(
    start, scripted, faults, workdirs
):
    rt = start()
    (workdir,) = workdirs(1)
    session = rt.open_session(workdir=workdir)
    faults.arm("finish.before_commit", "raise")
    first = rt.submit(session.id, "first")
    second = rt.submit(session.id, "second")
    assert rt.wait(first.id, timeout=10).status == TaskStatus.COMPLETED
    assert rt.wait(second.id, timeout=10).status == TaskStatus.COMPLETED
    assert scripted.prompts() == ["first", "second"]


def test_a_process_that_dies_mid_turn_fails_that_task_and_the_next_one_runs(
    start, scripted, workdirs
):
    rt = start()
    (workdir,) = workdirs(1)
    session = rt.open_session(workdir=workdir)
    dying = rt.submit(session.id, "[[die]]")
    after = rt.submit(session.id, "after")
    failed = rt.wait(dying.id, timeout=10)
    assert failed.status == TaskStatus.FAILED and "exited unexpectedly with code 1" in failed.error
    assert rt.wait(after.id, timeout=10).status == TaskStatus.COMPLETED


def test_tasks_start_in_acceptance_order_from_many_threads(start, scripted, workdirs):
    rt = start(max_pending_per_session=1000)
    (workdir,) = workdirs(1)
    session = rt.open_session(workdir=workdir)
    accepted: list[tuple[int, str]] = []
    lock = threading.Lock()

    def submit(thread: int) -> None:
        for i in range(20):
            with lock:  # the lock fixes acceptance order; the store must keep it
                task = rt.submit(session.id, f"t{thread}-{i}")
                accepted.append((task.queue_position, task.id))

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(accepted) == 160
    for _, task_id in accepted:
        assert rt.wait(task_id, timeout=30).status == TaskStatus.COMPLETED
    order = [rt.get_task(task_id).command for _, task_id in accepted]
    assert scripted.prompts(workdir) == order
    assert not scripted.overlaps


def test_a_submit_while_the_actor_passivates_is_never_stranded(start, scripted, workdirs):
    """Scenario 3: submits land right around the idle stop of the actor and its process."""
    rt = start(idle_process_timeout=0.02)
    (workdir,) = workdirs(1)
    session = rt.open_session(workdir=workdir)
    rng = random.Random(12)
    for i in range(150):
        task = rt.submit(session.id, f"p{i}")
        assert rt.wait(task.id, timeout=10).status == TaskStatus.COMPLETED, f"task {i} stranded"
        threading.Event().wait(rng.uniform(0, 0.04))
    assert len(scripted.processes) > 10  # the idle stop really happened in between


def test_thread_count_stays_flat_over_thousands_of_tasks(start, scripted, workdirs):
    rt = start()
    (workdir,) = workdirs(1)
    session = rt.open_session(workdir=workdir)
    warm = rt.submit(session.id, "warm")
    rt.wait(warm.id, timeout=10)
    before = threading.active_count()
    for i in range(2000):
        rt.wait(rt.submit(session.id, f"t{i}").id, timeout=10)
    assert threading.active_count() <= before + 2
    # The session's idle clock, the lease's next renewal and the fence behind it.
    assert len(rt.scheduler) <= 3


def test_cancel_close_and_queue_positions_come_from_the_store(start, scripted, workdirs):
    rt = start()
    (workdir,) = workdirs(1)
    session = rt.open_session(workdir=workdir)
    held = rt.submit(session.id, "[[hold]] a")
    assert held.queue_position == 0
    wait_for(lambda: rt.get_task(held.id).status == TaskStatus.RUNNING, what="held task running")
    waiting = [rt.submit(session.id, f"w{i}") for i in range(3)]
    assert [t.queue_position for t in waiting] == [0, 1, 2]
    assert [rt.get_task(t.id).queue_position for t in waiting] == [0, 1, 2]
    assert rt.cancel(waiting[1].id).status == TaskStatus.CANCELLED
    assert rt.get_task(waiting[2].id).queue_position == 1
    closed = rt.close_session(session.id)
    assert closed.status == "closed"
    assert rt.get_task(held.id).status == TaskStatus.CANCELLED
    assert {rt.get_task(t.id).status for t in waiting} == {TaskStatus.CANCELLED}
    assert scripted.prompts() == ["[[hold]] a"]


def test_pending_tasks_wait_in_the_store_across_a_restart(start, scripted, workdirs):
    rt = start()
    (workdir,) = workdirs(1)
    session = rt.open_session(workdir=workdir)
    held = rt.submit(session.id, "[[hold]] a")
    later = rt.submit(session.id, "b")
    wait_for(lambda: scripted.live(), what="the held turn")
    rt.stop()
    assert rt.store.__class__  # stopped runtime keeps nothing alive
    rt2 = start()
    assert rt2.get_task(held.id).status in (TaskStatus.FAILED, TaskStatus.CANCELLED)
    assert rt2.wait(later.id, timeout=10).status == TaskStatus.COMPLETED
    assert rt2.get_task(later.id).status != TaskStatus.PENDING


# What a review found: a lost commit answer, a failed finish, shutdown's order.


def test_a_start_whose_commit_answer_was_lost_does_not_wedge_the_session(
    start, scripted, workdirs, monkeypatch
):
    rt = start()
    (workdir,) = workdirs(1)
    real = rt.store.start_next_task
    calls = []

    def lost_answer(session_id, **claim):
        task = real(session_id, **claim)
        calls.append(task)
        if len(calls) == 1 and task is not None:  # committed, but the caller hears a failure
            raise DatabaseUnavailable("The connection failed during COMMIT (simulated).")
        return task

    monkeypatch.setattr(rt.store, "start_next_task", lost_answer)
    session = rt.open_session(workdir=workdir)
    first, second = rt.submit(session.id, "first"), rt.submit(session.id, "second")
    failed = rt.wait(first.id, timeout=10)
    assert failed.status == TaskStatus.FAILED and "was not sent to Claude" in failed.error
    assert rt.wait(second.id, timeout=10).status == TaskStatus.COMPLETED
    assert scripted.prompts() == ["second"]


def test_a_failed_finish_after_a_failed_spawn_is_retried(start, workdirs, monkeypatch, scripted):
    (workdir,) = workdirs(1)
    spawned = []

    def fails_once(**options):
        process = scripted(**options)
        if not spawned:
            process.start = lambda: (_ for _ in ()).throw(OSError("exec format error"))
        spawned.append(process)
        return process

    rt = start(process_factory=fails_once)
    real_finish = rt.store.finish_task
    finishes = []

    def flaky_finish(*args, **kwargs):
        finishes.append(args)
        if len(finishes) == 1:
            raise DatabaseUnavailable("The connection was lost (simulated).")
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(rt.store, "finish_task", flaky_finish)
    session = rt.open_session(workdir=workdir)
    first, second = rt.submit(session.id, "first"), rt.submit(session.id, "second")
    failed = rt.wait(first.id, timeout=10)
    assert failed.status == TaskStatus.FAILED and "could not be started" in failed.error
    assert rt.wait(second.id, timeout=10).status == TaskStatus.COMPLETED


def test_a_closed_session_whose_finish_was_retried_lets_its_actor_go(
    start, scripted, faults, workdirs
):
    rt = start()
    for workdir in workdirs(3):
        session = rt.open_session(workdir=workdir)
        task = rt.submit(session.id, "[[hold]] x")
        wait_for(lambda: scripted.live(), what="the held turn")
        faults.arm("finish.before_commit", "raise")
        rt.close_session(session.id)
        assert rt.get_task(task.id).status == TaskStatus.CANCELLED
    wait_for(lambda: not pykka.ActorRegistry.get_by_class(SessionActor), what="actors to stop")


def test_shutdown_lets_the_running_task_finish_and_keeps_the_rest_pending(
    start, scripted, workdirs
):
    rt = start()
    (workdir,) = workdirs(1)
    session = rt.open_session(workdir=workdir)
    tasks = [rt.submit(session.id, f"[[slow:0.3]] t{i}") for i in range(3)]
    wait_for(lambda: scripted.live(), what="the first turn")
    rt.shutdown(grace=10)
    assert [rt.get_task(t.id).status for t in tasks] == [
        TaskStatus.COMPLETED,
        TaskStatus.PENDING,
        TaskStatus.PENDING,
    ]


def test_an_interrupted_turn_sweeps_detached_tools_before_the_next_task(start, scripted, workdirs):
    rt = start()
    (workdir,) = workdirs(1)
    session = rt.open_session(workdir=workdir)
    held = rt.submit(session.id, "[[hold]] x")
    after = rt.submit(session.id, "after")
    wait_for(lambda: scripted.live(), what="the held turn")
    assert rt.cancel(held.id).status == TaskStatus.CANCELLED
    assert rt.wait(after.id, timeout=10).status == TaskStatus.COMPLETED
    assert [p.detached_sweeps for p in scripted.processes] == [1]
