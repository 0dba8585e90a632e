"""The actor core through the embedding API, against the real CLI and the fake API."""

from __future__ import annotations

import os
import textwrap
import threading

import psutil
import pykka
import pytest

from aicli import Runtime
from aicli.actors import process_tree
from aicli.actors.session import SessionActor
from aicli.contract import TaskStatus
from aicli.runtime.composition import Lifecycle, Part
from aicli.runtime.gate import Gate
from aicli.testing.processes import marked_running
from aicli.testing.waiting import wait_for


@pytest.fixture
def rt(make_runtime) -> Runtime:
    return make_runtime()


def sleepers(rt: Runtime) -> list[psutil.Process]:
    """The tool `sleep` processes that carry our mark."""
    return marked_running(rt.owner_prefix, "sleep 600")


def session_actors() -> list:
    return pykka.ActorRegistry.get_by_class(SessionActor)


def claude_processes(rt: Runtime) -> list[psutil.Process]:
    """The CLI processes of this runtime: the oldest process of each mark (each CLI process,
    or the sandbox runtime that wraps it, has a mark of its own, and everything it starts
    inherits it). Counting parentless ones instead saw a dying srt's helpers, orphaned for a
    moment before they are killed, as one more CLI."""
    oldest: dict[str, tuple[float, psutil.Process]] = {}
    for process in process_tree.marked_processes(rt.owner_prefix, prefix=True):
        mark = process_tree.mark_of(process.pid)
        try:
            created = process.create_time()
        except psutil.NoSuchProcess:
            continue
        if mark and (mark not in oldest or created < oldest[mark][0]):
            oldest[mark] = (created, process)
    return [process for _, process in oldest.values()]


def test_the_readme_snippet_works_as_written(tmp_path, claude_bin, claude_env, monkeypatch):
    for key, value in claude_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    workdir = tmp_path / "some-dir"
    workdir.mkdir()
    snippet = textwrap.dedent(
        f"""
        from aicli import Runtime
        with Runtime.start(database_url="sqlite:///x.db", claude_bin={claude_bin!r}) as rt:
            s = rt.open_session(workdir={str(workdir)!r}, allowed_tools=["Bash"])
            t = rt.submit(s.id, "list the files")
            done = rt.wait(t.id, timeout=60)
            rt.cancel(t.id); rt.get_task(t.id); rt.list_tasks(session_id=s.id, status=["completed"])
            rt.close_session(s.id)
        """
    )
    scope: dict = {}
    exec(snippet, scope)
    assert scope["t"].status == TaskStatus.PENDING
    assert scope["done"].status == TaskStatus.COMPLETED
    assert scope["done"].output == "Reply to: list the files"
    assert not claude_processes(scope["rt"])


def test_one_session_runs_its_tasks_one_at_a_time_in_order(make_runtime, workdir, fake_api):
    rt = make_runtime(max_pending_per_session=200)
    session = rt.open_session(workdir=workdir, allowed_tools=["Bash"])
    accepted: list[tuple[str, str]] = []
    lock = threading.Lock()

    def submitter(thread: int) -> None:
        for n in range(10):
            prompt = f"[[say: t{thread}-{n}]]"
            with lock:  # the lock makes "accepted" record acceptance order
                task = rt.submit(session.id, prompt)
                accepted.append((task.id, prompt))

    threads = [threading.Thread(target=submitter, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(accepted) == 160
    for task_id, _ in accepted:
        assert rt.wait(task_id, timeout=120).status == TaskStatus.COMPLETED
    requests = [r for r in fake_api.conversation_requests() if "[[say: t" in r.prompt]
    assert [r.prompt for r in requests] == [prompt for _, prompt in accepted]
    for earlier, later in zip(requests, requests[1:], strict=False):
        assert earlier.finished_at <= later.started_at
    tasks = [rt.get_task(task_id) for task_id, _ in accepted]
    for earlier, later in zip(tasks, tasks[1:], strict=False):
        assert earlier.completed_at <= later.started_at


def test_sessions_run_side_by_side(rt, workdir, fake_api):
    sessions = [rt.open_session(workdir=workdir) for _ in range(8)]
    warm = [rt.submit(s.id, "[[say: warm up]]") for s in sessions]
    assert {rt.wait(t.id, timeout=120).status for t in warm} == {TaskStatus.COMPLETED}
    tasks = [rt.submit(s.id, f"[[slow: 3]] [[say: s{i}]]") for i, s in enumerate(sessions)]
    done = [rt.wait(t.id, timeout=120) for t in tasks]
    assert {t.status for t in done} == {TaskStatus.COMPLETED}
    slow = [r for r in fake_api.conversation_requests() if "[[slow: 3]]" in r.prompt]
    assert len(slow) == 8
    latest_start = max(r.started_at for r in slow)
    earliest_end = min(r.finished_at for r in slow)
    t0 = min(r.started_at for r in slow)
    spans = sorted((round(r.started_at - t0, 3), round(r.finished_at - t0, 3)) for r in slow)
    assert latest_start < earliest_end, spans


def test_cancel_pending_drops_it(rt, workdir, fake_api):
    session = rt.open_session(workdir=workdir)
    blocker = rt.submit(session.id, "[[slow: 3]]")
    pending = rt.submit(session.id, "[[say: never]]")
    assert pending.queue_position == 1
    wait_for(lambda: rt.get_task(blocker.id).status == "running", timeout=30, what="blocker")
    assert rt.get_task(pending.id).queue_position == 0
    cancelled = rt.cancel(pending.id)
    assert cancelled.status == TaskStatus.CANCELLED
    assert cancelled.error == "Cancelled before it started."
    assert rt.cancel(pending.id).status == TaskStatus.CANCELLED
    assert rt.wait(blocker.id, timeout=60).status == TaskStatus.COMPLETED
    after = rt.submit(session.id, "[[say: after]]")
    assert rt.wait(after.id, timeout=60).output == "after"
    assert not fake_api.requests_with_prompt("[[say: never]]")


def test_cancel_running_interrupts_the_tool(rt, workdir):
    session = rt.open_session(workdir=workdir, allowed_tools=["Bash"])
    task = rt.submit(session.id, "[[bash: echo started; sleep 600]]")
    wait_for(lambda: sleepers(rt), timeout=30, what="the tool's sleep")
    cancelled = rt.cancel(task.id)
    assert cancelled.status == TaskStatus.CANCELLED
    assert "interrupted" in cancelled.error
    wait_for(lambda: not sleepers(rt), timeout=10, what="the sleep to end")
    nxt = rt.submit(session.id, "[[say: next]]")
    assert rt.wait(nxt.id, timeout=60).output == "next"


def test_cancel_of_a_finished_task_changes_nothing(rt, workdir):
    session = rt.open_session(workdir=workdir)
    task = rt.submit(session.id, "[[say: done]]")
    done = rt.wait(task.id, timeout=60)
    assert done.status == TaskStatus.COMPLETED
    assert rt.cancel(task.id) == done


def test_timeout_fails_the_task(rt, workdir):
    session = rt.open_session(workdir=workdir, allowed_tools=["Bash"])
    task = rt.submit(session.id, "[[bash: echo started; sleep 600]]", timeout_s=1.5)
    done = rt.wait(task.id, timeout=60)
    assert done.status == TaskStatus.FAILED
    assert "Timed out after 1.5 s" in done.error
    wait_for(lambda: not sleepers(rt), timeout=10, what="the sleep to end")
    nxt = rt.submit(session.id, "[[say: next]]")
    assert rt.wait(nxt.id, timeout=60).output == "next"


def test_process_crash_fails_the_task_and_the_session_carries_on(rt, workdir, fake_api):
    session = rt.open_session(workdir=workdir, allowed_tools=["Bash"])
    first = rt.submit(session.id, "[[say: remember me]]")
    assert rt.wait(first.id, timeout=60).status == TaskStatus.COMPLETED
    task = rt.submit(session.id, "[[bash: echo started; sleep 600]]")
    wait_for(lambda: sleepers(rt), timeout=30, what="the tool's sleep")
    [cli] = claude_processes(rt)
    cli.kill()
    done = rt.wait(task.id, timeout=30)
    assert done.status == TaskStatus.FAILED
    assert "exited unexpectedly with code -9" in done.error
    wait_for(lambda: not sleepers(rt), timeout=10, what="the orphaned sleep to be ended")
    nxt = rt.submit(session.id, "[[say: next]]")
    assert rt.wait(nxt.id, timeout=60).output == "next"
    assert "[[say: remember me]]" in fake_api.requests_with_prompt("[[say: next]]")[-1].user_texts()


def test_api_errors_fail_the_task_with_the_clis_message(rt, workdir):
    session = rt.open_session(workdir=workdir)
    task = rt.submit(session.id, "[[error: 401]]")
    done = rt.wait(task.id, timeout=60)
    assert done.status == TaskStatus.FAILED
    assert "Invalid API key" in done.error
    ok = rt.submit(session.id, "[[say: fine]]")
    done_ok = rt.wait(ok.id, timeout=60)
    assert done_ok.status == TaskStatus.COMPLETED, done_ok.error


def test_results_carry_cost_turns_and_usage(rt, workdir):
    session = rt.open_session(workdir=workdir)
    tasks = [rt.submit(session.id, f"[[say: {n}]]") for n in range(2)]
    done = [rt.wait(t.id, timeout=60) for t in tasks]
    for task in done:
        assert task.cost_usd and task.cost_usd > 0
        assert task.num_turns >= 1
        assert task.duration_ms is not None
        assert task.usage.output_tokens > 0
    assert done[0].cost_usd == pytest.approx(done[1].cost_usd)
    assert rt.get_session(session.id).total_cost_usd == pytest.approx(sum(t.cost_usd for t in done))


def test_live_processes_are_capped_and_conversations_survive_eviction(
    make_runtime, workdir, fake_api
):
    rt = make_runtime(max_live_processes=2)
    sessions = [rt.open_session(workdir=workdir) for _ in range(5)]
    most = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal most
        while not stop.wait(0.02):
            most = max(most, len(claude_processes(rt)))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for round_ in range(3):
            tasks = [rt.submit(s.id, f"[[say: r{round_}-s{i}]]") for i, s in enumerate(sessions)]
            for task in tasks:
                finished = rt.wait(task.id, timeout=120)
                assert finished.status == TaskStatus.COMPLETED, finished.error
    finally:
        stop.set()
        watcher.join()
    assert 1 <= most <= 2
    for i in range(5):
        last = fake_api.requests_with_prompt(f"[[say: r2-s{i}]]")[-1]
        assert last.user_texts() == [f"[[say: r{r}-s{i}]]" for r in range(3)]


def test_idle_processes_are_stopped_and_resumed(make_runtime, workdir, fake_api):
    rt = make_runtime(idle_process_timeout=0.5)
    session = rt.open_session(workdir=workdir)
    first = rt.submit(session.id, "[[say: one]]")
    assert rt.wait(first.id, timeout=60).status == TaskStatus.COMPLETED
    wait_for(lambda: not rt.get_session(session.id).process_alive, 10, "the idle stop")
    wait_for(lambda: not session_actors(), 10, "the idle session's actor to stop")
    second = rt.submit(session.id, "[[say: two]]")
    assert rt.wait(second.id, timeout=60).status == TaskStatus.COMPLETED
    assert fake_api.requests_with_prompt("[[say: two]]")[-1].user_texts() == [
        "[[say: one]]",
        "[[say: two]]",
    ]


def test_sixteen_sessions_at_once_share_one_home(rt, workdir, claude_env):
    sessions = [rt.open_session(workdir=workdir) for _ in range(16)]
    tasks = [rt.submit(s.id, f"[[say: s{i}]]") for i, s in enumerate(sessions)]
    done = [rt.wait(t.id, timeout=180) for t in tasks]
    assert [t.status for t in done] == [TaskStatus.COMPLETED] * 16, [
        t.error for t in done if t.error
    ]
    assert [t.output for t in done] == [f"s{i}" for i in range(16)]
    config = os.path.join(claude_env["HOME"], ".claude.json")
    if os.path.exists(config):
        import json

        with open(config) as handle:
            json.load(handle)


def test_closing_a_session_cancels_its_work_and_stops_its_process(rt, workdir):
    from aicli.errors import SessionClosed

    session = rt.open_session(workdir=workdir, allowed_tools=["Bash"])
    running = rt.submit(session.id, "[[bash: echo started; sleep 600]]")
    pending = rt.submit(session.id, "[[say: never]]")
    wait_for(lambda: sleepers(rt), timeout=30, what="the tool's sleep")
    closed = rt.close_session(session.id)
    assert closed.status == "closed"
    assert rt.get_task(running.id).status == TaskStatus.CANCELLED
    assert rt.get_task(pending.id).status == TaskStatus.CANCELLED
    wait_for(lambda: not claude_processes(rt) and not sleepers(rt), 15, "every process to end")
    with pytest.raises(SessionClosed):
        rt.submit(session.id, "more")
    assert rt.close_session(session.id).status == "closed"


def test_stop_leaves_no_process_behind(make_runtime, workdir):
    rt = make_runtime()
    session = rt.open_session(workdir=workdir, allowed_tools=["Bash"])
    rt.submit(session.id, "[[bash: echo started; sleep 600]]")
    wait_for(lambda: sleepers(rt), timeout=30, what="the tool's sleep")
    owner = rt.owner_prefix
    rt.stop()
    assert not process_tree.marked_processes(owner, prefix=True)
    assert not sleepers(rt)


def recorded_parts(done: list[str], failing: str | None = None) -> list[Part]:
    """Parts that write down their starts and stops; ``failing``'s start raises."""

    def start(name: str):
        def run() -> None:
            done.append(f"start {name}")
            if name == failing:
                raise RuntimeError(name)

        return run

    given = Part("given", start=None, stop=lambda: done.append("stop given"))
    return [given] + [
        Part(name, start=start(name), stop=lambda name=name: done.append(f"stop {name}"))
        for name in ("a", "b", "c")
    ]


def test_parts_start_in_their_order_and_stop_in_reverse_once():
    done: list[str] = []
    gate = Gate()
    lifecycle = Lifecycle(recorded_parts(done), gate)
    lifecycle.start()
    assert done == ["start a", "start b", "start c"]
    lifecycle.stop()
    lifecycle.stop()
    assert done[3:] == ["stop c", "stop b", "stop a", "stop given"]
    assert gate.stopped


def test_a_part_that_fails_to_start_is_stopped_with_those_before_it_but_not_the_given():
    done: list[str] = []
    with pytest.raises(RuntimeError):
        Lifecycle(recorded_parts(done, failing="b"), Gate()).start()
    assert done == ["start a", "start b", "stop b", "stop a"]
