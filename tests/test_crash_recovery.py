"""Surviving crashes: real ``aicli serve`` processes killed and restarted on one database."""

from __future__ import annotations

import signal
import time

import psutil
import pytest
import requests

from aicli.runtime import owner_prefix
from aicli.testing.processes import marked_running
from aicli.testing.waiting import wait_for
from tests.serve_process import aicli_children, submit, task

pytest_plugins = ("tests.serve_fixtures",)


def sleepers(database_url: str) -> list[psutil.Process]:
    """The tool `sleep` processes that carry our mark."""
    return marked_running(owner_prefix(database_url), "sleep 600")


def open_session(url: str, workdir: str) -> str:
    response = requests.post(
        f"{url}/sessions", json={"workdir": workdir, "allowed_tools": ["Bash"]}, timeout=10
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def watchdogs(server_pid: int) -> list[psutil.Process]:
    """The server's watchdog (``aicli.actors.watchdog``), a child of its own."""
    return [
        child
        for child in psutil.Process(server_pid).children()
        if "aicli.actors.watchdog" in " ".join(child.cmdline())
    ]


@pytest.mark.parametrize("killed", ["server", "server and watchdog"])
def test_sigkill_of_the_server_then_restart(serve, database_url, workdir, fake_api, killed):
    guarded = database_url.startswith("postgresql")  # only a node with peers has a watchdog
    if killed == "server and watchdog" and not guarded:
        pytest.skip("an SQLite server runs no watchdog: the other case covers it")
    server = serve()
    session_id = open_session(server.url, workdir)
    before = submit(server.url, session_id, "[[say: done before the crash]]")
    assert task(server.url, before, wait=30)["status"] == "completed"
    running = submit(server.url, session_id, "[[bash: echo started; sleep 600]]")
    waiting = [submit(server.url, session_id, f"[[say: after {n}]]") for n in range(3)]
    wait_for(lambda: sleepers(database_url), timeout=30, what="the tool's sleep")
    old_children = {p.pid for p in aicli_children(database_url)}
    assert old_children

    dogs = watchdogs(server.popen.pid)
    assert len(dogs) == guarded
    if killed == "server and watchdog":
        dogs.pop().kill()
    server.signal(signal.SIGKILL)
    server.wait(10)
    if dogs:
        # It saw the server's pipe close: the tool ends now, not at the next start.
        wait_for(lambda: not sleepers(database_url), timeout=10, what="the watchdog's kill")
    else:
        assert sleepers(database_url), "with no watchdog, the orphan lives until the next start"

    server = serve()
    # At once on SQLite; on PostgreSQL once the dead run's lease has ended.
    crashed = wait_for(
        lambda: (t := task(server.url, running))["status"] == "failed" and t,
        timeout=30,
        what="the crashed task to fail",
    )
    assert "server stopped while this task was running" in crashed["error"]
    finished = [task(server.url, t, wait=60) for t in waiting]
    assert [t["status"] for t in finished] == ["completed"] * 3
    assert [t["output"] for t in finished] == [f"after {n}" for n in range(3)]
    starts = [t["started_at"] for t in finished]
    assert starts == sorted(starts)
    assert len(fake_api.requests_with_prompt("[[say: done before the crash]]")) == 1
    wait_for(lambda: not sleepers(database_url), timeout=30, what="the orphan's end")
    wait_for(
        lambda: not old_children & {p.pid for p in psutil.process_iter()},
        timeout=30,
        what="the old run's processes to end",
    )
    last = fake_api.requests_with_prompt("[[say: after 2]]")[-1]
    assert "[[say: done before the crash]]" in last.user_texts()


def test_sigterm_stops_cleanly_and_keeps_pending_work(serve, database_url, workdir):
    server = serve("--shutdown-grace", "1")
    session_id = open_session(server.url, workdir)
    running = submit(server.url, session_id, "[[bash: echo started; sleep 600]]")
    pending = submit(server.url, session_id, "[[say: later]]")
    wait_for(lambda: sleepers(database_url), timeout=30, what="the tool's sleep")

    asked = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait(30) == 0
    assert time.monotonic() - asked < 1 + 10
    assert not sleepers(database_url)
    assert not aicli_children(database_url)

    server = serve()
    stopped = task(server.url, running)
    assert stopped["status"] == "cancelled"
    assert "shut down" in stopped["error"]
    assert task(server.url, pending, wait=60)["output"] == "later"
