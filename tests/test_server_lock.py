"""One server per SQLite file: a second is refused and touches nothing; a dead one blocks none.
PostgreSQL is shared by nodes (``test_nodes``, ``test_multinode``): nothing to hold there."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from aicli import Runtime
from aicli.errors import AlreadyServing
from aicli.storage import server_lock
from aicli.testing.postgres import fresh_schema_url
from aicli.testing.waiting import wait_for
from tests.http_server import Client
from tests.serve_process import AICLI, ServeProcess, free_port

pytest_plugins = ("tests.storage_fixtures",)


def test_a_held_lock_refuses_a_second_until_released(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path}/aicli.db"
    first = server_lock.acquire(database_url)
    with pytest.raises(AlreadyServing, match=r"Another aicli server.* is using the database at"):
        server_lock.acquire(database_url)
    first.release()
    first.release()  # twice is harmless
    server_lock.acquire(database_url).release()


def test_the_sqlite_refusal_names_the_lock_file_and_its_holder(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    held = server_lock.acquire(f"sqlite:///{tmp_path}/real/aicli.db")
    try:
        lock_file = tmp_path / "real" / "aicli.db.lock"
        # The same file by another path is the same database.
        with pytest.raises(AlreadyServing) as caught:
            server_lock.acquire(f"sqlite:///{tmp_path}/alias/aicli.db")
        assert f"(pid {os.getpid()})" in caught.value.message
        assert str(lock_file) in caught.value.message and "--database-url" in caught.value.message
    finally:
        held.release()


@pytest.mark.postgres
def test_postgres_holds_no_lock_as_nodes_share_it(postgres_database: str) -> None:
    url = fresh_schema_url(postgres_database)
    held = [server_lock.acquire(url), server_lock.acquire(url)]
    for lock in held:
        lock.release()


def test_a_second_runtime_is_refused_and_the_first_keeps_its_work(
    make_runtime: Callable[..., Runtime], tmp_path: Path, workdir: str
) -> None:
    first = make_runtime()
    session = first.open_session(workdir=workdir)
    task = first.submit(session.id, "[[slow: 1]] [[say: still mine]]")
    wait_for(lambda: first.get_task(task.id).status == "running", timeout=30, what="the task")
    with pytest.raises(AlreadyServing):
        make_runtime()
    done = first.wait(task.id, timeout=60)
    assert (done.status, done.output) == ("completed", "still mine")
    first.stop()
    make_runtime().stop()


@pytest.fixture
def serve_env(claude_bin: str, claude_env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **claude_env, "AICLI_CLAUDE_BIN": claude_bin}


def test_a_second_aicli_serve_exits_at_once_and_a_killed_one_blocks_nothing(
    tmp_path: Path, serve_env: dict[str, Any], workdir: str
) -> None:
    database_url = f"sqlite:///{tmp_path}/aicli.db"
    first = ServeProcess(database_url, serve_env, tmp_path / "first.log")
    try:
        client = Client(first.url)
        session = client.open_session(workdir)
        asked = time.monotonic()
        second = subprocess.run(
            [AICLI, "serve", "--port", str(free_port()), "--database-url", database_url],
            env=serve_env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert time.monotonic() - asked < 10
        assert second.returncode == 2, second.stderr
        assert f"Another aicli server (pid {first.popen.pid}) is using the database" in (
            second.stderr
        )
        assert f"{tmp_path}/aicli.db.lock" in second.stderr
        task = client.submit(session["id"], "[[say: unharmed]]")
        assert client.wait_terminal(task["id"])["output"] == "unharmed"
    finally:
        first.signal(signal.SIGKILL)
        first.wait(10)

    again = ServeProcess(database_url, serve_env, tmp_path / "again.log")
    try:
        assert requests.get(f"{again.url}/sessions/{session['id']}", timeout=10).ok
    finally:
        again.stop()
