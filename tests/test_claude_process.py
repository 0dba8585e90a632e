"""ClaudeProcess against the real CLI and the fake Messages API."""

from __future__ import annotations

import os
import queue
import signal
import time
from typing import Any

import psutil
import pytest

from aicli.actors import process_tree
from aicli.actors.claude_process import ClaudeProcess, ProcessExit
from aicli.contract import SessionSettings
from aicli.testing.processes import marked_running
from aicli.testing.waiting import wait_for


class Driver:
    """A ClaudeProcess whose callbacks land in a queue the test reads with deadlines."""

    def __init__(self, claude_bin: str, env: dict[str, str], workdir: str, **settings: Any):
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        resume = settings.pop("resume", None)
        self.process = ClaudeProcess(
            claude_bin=claude_bin,
            settings=SessionSettings(workdir=workdir, allowed_tools=("Bash",), **settings),
            on_message=lambda m: self.events.put(("message", m)),
            on_exit=lambda e: self.events.put(("exit", e)),
            resume=resume,
            env=env,
        )
        self.process.start()

    def next(self, timeout: float = 20.0) -> tuple[str, Any]:
        return self.events.get(timeout=timeout)

    def until(self, predicate, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            kind, value = self.next(max(0.01, deadline - time.monotonic()))
            if kind == "exit":
                raise AssertionError(f"process exited: {value}")
            if predicate(value):
                return value

    def result(self, timeout: float = 20.0) -> dict[str, Any]:
        return self.until(lambda m: m.get("type") == "result", timeout)

    def ask(self, prompt: str, timeout: float = 20.0) -> dict[str, Any]:
        self.process.send_prompt(prompt)
        return self.result(timeout)

    def exit(self, timeout: float = 20.0) -> ProcessExit:
        deadline = time.monotonic() + timeout
        while True:
            kind, value = self.next(max(0.01, deadline - time.monotonic()))
            if kind == "exit":
                return value


def sleepers(d: Driver) -> list[psutil.Process]:
    """The tool `sleep` processes that carry our mark."""
    return marked_running(d.process.mark, "sleep 600")


@pytest.fixture
def driver(claude_bin, claude_env, workdir):
    drivers = []

    def make(**settings: Any) -> Driver:
        drivers.append(Driver(claude_bin, claude_env, workdir, **settings))
        return drivers[-1]

    yield make
    for d in drivers:
        d.process.kill()


def test_three_prompts_share_one_conversation(driver, fake_api):
    d = driver()
    results = [d.ask(f"prompt number {n}") for n in range(3)]
    session_ids = {r["session_id"] for r in results}
    assert len(session_ids) == 1 and d.process.session_id in session_ids
    assert [r["result"] for r in results] == [f"Reply to: prompt number {n}" for n in range(3)]
    turns = fake_api.conversation_requests()
    assert [t.user_texts()[-3:] for t in turns][-1] == [f"prompt number {n}" for n in range(3)]
    assert [len(t.messages) for t in turns] == sorted(len(t.messages) for t in turns)
    assert {t.session_id for t in turns} == session_ids


def test_resume_continues_the_conversation(driver, fake_api):
    first = driver()
    first.ask("remember the word avocado")
    session_id = first.process.session_id
    first.process.stop()
    assert first.exit().requested
    second = driver(resume=session_id)
    result = second.ask("what was the word?")
    assert result["session_id"] == session_id
    assert fake_api.conversation_requests()[-1].user_texts() == [
        "remember the word avocado",
        "what was the word?",
    ]


def test_interrupt_stops_a_running_bash_tool(driver):
    d = driver()
    d.process.send_prompt("[[bash: echo started; sleep 600]]")
    wait_for(lambda: sleepers(d), timeout=20, what="the tool's sleep to start")
    asked = time.monotonic()
    d.process.interrupt()
    result = d.result(timeout=2)
    assert time.monotonic() - asked < 2
    assert result["is_error"] is True
    wait_for(lambda: not sleepers(d), timeout=5, what="the sleep to end")
    assert d.ask("[[say: still here]]")["result"] == "still here"
    assert d.process.alive


def test_stop_leaves_nothing_behind(driver):
    d = driver()
    d.process.send_prompt("[[bash: echo started; sleep 600]]")
    wait_for(lambda: sleepers(d), timeout=20, what="the tool's sleep to start")
    d.process.stop(grace=2)
    assert d.exit().requested
    assert not process_tree.marked_processes(d.process.mark)
    assert not sleepers(d)


def test_sigkill_mid_turn_is_reported_and_tools_are_reaped(driver):
    d = driver()
    d.process.send_prompt("[[bash: echo started; sleep 600]]")
    wait_for(lambda: sleepers(d), timeout=20, what="the tool's sleep to start")
    os.kill(d.process.pid, signal.SIGKILL)
    exit_ = d.exit()
    assert not exit_.requested
    assert exit_.returncode == -signal.SIGKILL
    assert "exited unexpectedly with code -9" in exit_.describe()
    assert not sleepers(d)
    assert not process_tree.marked_processes(d.process.mark)


def test_api_401_is_an_error_result(driver):
    result = driver().ask("[[error: 401]]")
    assert result["is_error"] is True
    assert "API key" in result["result"]


def test_max_turns_stop(driver):
    result = driver(max_turns=2).ask("[[bash-forever]]")
    assert result["is_error"] is True
    assert result["subtype"] == "error_max_turns"


def test_a_5mb_reply_arrives_whole(driver):
    result = driver().ask("[[big: 5000000]]", timeout=60)
    assert len(result["result"]) == 5_000_000
    assert result["result"].startswith("0123456789abcdef")


def test_the_child_environment_is_clean(claude_bin, workdir, monkeypatch):
    monkeypatch.setenv("CLAUDECODE", "1")
    monkeypatch.setenv("AICLI_API_TOKEN", "secret")
    process = ClaudeProcess(
        claude_bin=claude_bin,
        settings=SessionSettings(workdir=workdir),
        on_message=lambda m: None,
        on_exit=lambda e: None,
        env={"EXTRA": "1"},
    )
    assert "CLAUDECODE" not in process._env
    assert "AICLI_API_TOKEN" not in process._env
    assert process._env["EXTRA"] == "1"
    assert process._env[process_tree.MARK_VARIABLE] == process.mark
