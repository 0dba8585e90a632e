"""SIGKILL of a real ``aicli serve`` between the two steps of starting a task.

``AICLI_FAULTS`` stalls the server's session actor at a named seam (a disk that
never answers); the test then kills the server for real and restarts it. Before
the store became the queue, a prompt went to Claude before the task was
recorded as running, so a kill in between ran the task twice after a restart.
"""

from __future__ import annotations

import signal

import requests

from aicli.testing.waiting import wait_for
from tests.serve_process import ServeProcess, submit, task

pytest_plugins = ("tests.serve_fixtures",)


def _three_tasks(server: ServeProcess, workdir: str) -> tuple[str, str, str]:
    response = requests.post(f"{server.url}/sessions", json={"workdir": workdir}, timeout=10)
    session_id = response.json()["id"]
    first = submit(server.url, session_id, "[[say: first]]")
    second = submit(server.url, session_id, "[[say: second]]")
    third = submit(server.url, session_id, "[[say: third]]")
    assert task(server.url, first, wait=60)["status"] == "completed"
    return first, second, third


def test_killed_after_recording_running_before_sending_the_prompt(serve, workdir, fake_api):
    server = serve(env={"AICLI_FAULTS": "start.after_commit=stall@2"})
    _, second, third = _three_tasks(server, workdir)
    wait_for(lambda: task(server.url, second)["status"] == "running", what="second running")
    server.signal(signal.SIGKILL)
    server.wait(10)

    server = serve()
    # At once on SQLite; on PostgreSQL once the dead run's lease has ended.
    crashed = wait_for(
        lambda: (t := task(server.url, second))["status"] == "failed" and t,
        timeout=30,
        what="the crashed task to fail",
    )
    assert "server stopped while this task was running" in crashed["error"]
    assert task(server.url, third, wait=60)["output"] == "third"
    assert not fake_api.requests_with_prompt("[[say: second]]"), "its prompt was never sent"
    assert len(fake_api.requests_with_prompt("[[say: first]]")) == 1
    assert len(fake_api.requests_with_prompt("[[say: third]]")) == 1


def test_killed_while_recording_running_leaves_the_task_pending_to_run_once(
    serve, workdir, fake_api
):
    server = serve(env={"AICLI_FAULTS": "start.before_commit=stall@2"})
    _, second, third = _three_tasks(server, workdir)
    # The first task is complete, so the actor is at the second start, stalled before it
    # commits: the task stays pending and no prompt has gone out.
    wait_for(lambda: fake_api.requests_with_prompt("[[say: first]]"), what="the first turn")
    assert task(server.url, second)["status"] == "pending"
    server.signal(signal.SIGKILL)
    server.wait(10)

    server = serve()
    assert task(server.url, second, wait=60)["output"] == "second"
    assert task(server.url, third, wait=60)["output"] == "third"
    assert len(fake_api.requests_with_prompt("[[say: second]]")) == 1
    assert len(fake_api.requests_with_prompt("[[say: first]]")) == 1
