"""Fixtures of the HTTP tests, loaded with ``pytest_plugins = ("tests.http_fixtures",)``.

Kept apart from the helpers in ``http_server`` so test modules can import those
helpers without pre-empting pytest's loading of these fixtures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aicli import Runtime
from tests.http_server import Client, serving


@pytest.fixture
def make_runtime(tmp_path, claude_bin, claude_env) -> Iterator[Callable[..., Runtime]]:
    """Starts runtimes on one file database (so a restart sees the earlier data)."""
    started: list[Runtime] = []

    def start(**settings: Any) -> Runtime:
        settings.setdefault("database_url", f"sqlite:///{tmp_path}/aicli.db")
        settings.setdefault("threads", 12)
        settings.setdefault("max_streams", 3)
        started.append(Runtime.start(claude_bin=claude_bin, claude_env=claude_env, **settings))
        return started[-1]

    yield start
    for runtime in started:
        runtime.stop()


@pytest.fixture
def runtime(make_runtime) -> Runtime:
    return make_runtime()


@pytest.fixture
def base_url(runtime: Runtime) -> Iterator[str]:
    with serving(runtime) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Client:
    return Client(base_url)
