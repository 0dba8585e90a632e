"""Shared fixtures: the fake Anthropic API and the real Claude CLI pointed at it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aicli import Runtime
from aicli.actors.claude_bin import find_claude
from aicli.testing.fake_anthropic import FakeAnthropic
from aicli.testing.scripted_claude import ScriptedClaude
from tests.serve_process import release_ports


@pytest.fixture(autouse=True)
def state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test's sessions keep their own directories apart from every other test's (and
    from the user's ~/.local/state): every runtime and server it starts inherits this."""
    path = str(tmp_path_factory.mktemp("state"))
    monkeypatch.setenv("AICLI_STATE_DIR", path)
    return path


@pytest.fixture(autouse=True)
def reserved_ports() -> Iterator[None]:
    """Ports ``free_port`` reserved stay reserved until the test's servers have stopped
    (this fixture comes first, so it ends last)."""
    yield
    release_ports()


@pytest.fixture(scope="session")
def claude_bin() -> str:
    return find_claude()


@pytest.fixture
def fake_api() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def claude_env(fake_api: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What a CLI needs to talk to the fake: its URL, a dummy key and a HOME of its own."""
    home = tmp_path_factory.mktemp("home")
    return {**fake_api.env(), "HOME": str(home), "PATH": os.environ["PATH"]}


@pytest.fixture
def workdir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("work"))


def _runtimes(tmp_path: Path, **defaults: Any) -> Iterator[Callable[..., Runtime]]:
    """A starter of runtimes on one file database (so a restart sees the earlier data), with
    ``defaults`` a test may override; every runtime it started stops after the test."""
    started: list[Runtime] = []

    def start(**settings: Any) -> Runtime:
        database = {"database_url": f"sqlite:///{tmp_path}/aicli.db"}
        started.append(Runtime.start(**{**database, **defaults, **settings}))
        return started[-1]

    yield start
    for runtime in started:
        runtime.stop()


@pytest.fixture
def make_runtime(tmp_path, claude_bin, claude_env) -> Iterator[Callable[..., Runtime]]:
    """Starts runtimes on the real CLI, pointed at the fake API."""
    yield from _runtimes(
        tmp_path, claude_bin=claude_bin, claude_env=claude_env, threads=12, max_streams=3
    )


@pytest.fixture
def scripted() -> ScriptedClaude:
    """The Claude processes of ``start_scripted``'s runtimes: no CLI, no API."""
    return ScriptedClaude()


@pytest.fixture
def start_scripted(tmp_path, scripted) -> Iterator[Callable[..., Runtime]]:
    """Starts runtimes whose Claude is ``scripted``, which can hold a turn open, kill a
    process mid-turn or ask on cue."""
    yield from _runtimes(tmp_path, process_factory=scripted)


@pytest.fixture
def runtime(make_runtime) -> Runtime:
    return make_runtime()
