"""Fixtures for tests of a real ``aicli serve`` subprocess, loaded with
``pytest_plugins = ("tests.serve_fixtures",)``: one database file per test, and servers
on it that are killed at the end if they still run."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.serve_process import ServeProcess


@pytest.fixture
def database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/aicli.db"


@pytest.fixture
def serve(tmp_path, database_url, claude_bin, claude_env) -> Iterator[Callable[..., ServeProcess]]:
    """``serve(*args, env=..., log_name=..., port=...)``: a server with the real CLI and the
    fake API (on ``port``: where a server that was killed listened, for its clients)."""
    servers: list[ServeProcess] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        log_name: str = "serve.log",
        port: int | None = None,
    ) -> ServeProcess:
        # A short lease: on PostgreSQL a restarted server takes its dead run's sessions
        # over once that run's lease has ended.
        given = {
            **claude_env,
            "AICLI_CLAUDE_BIN": claude_bin,
            "AICLI_LEASE_TTL": "2",
            **(env or {}),
        }
        servers.append(ServeProcess(database_url, given, tmp_path / log_name, *args, port=port))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
