"""A scripted stand-in for the Claude CLI process, for tests of the actor core.

The real CLI (against ``FakeAnthropic``) is what integration tests use. This
one is for what they cannot do quickly or at all: thousands of turns in a
randomized test, a process that dies mid-turn on cue, text with a lone
surrogate, turns held open until the test lets them end. Pass a
``ScriptedClaude`` as ``process_factory``; it records every turn, and notices
two turns of one session (one workdir) running at once.

A prompt steers its turn with directives, like the fake API's:
``[[hold]]`` (answer only when the test calls ``release``), ``[[die]]`` (the
process exits with code 1 mid-turn), ``[[surrogate]]`` (the answer holds a lone
UTF-16 surrogate), ``[[slow:S]]`` (answer after S seconds), ``[[ask]]`` (first
ask, as ``--permission-prompt-tool stdio`` does, to run Bash, and go on once
answered; the answers are kept in ``answers``; with ``[[withdraw]]`` too, take the
request back at once and go on), ``[[control]]`` (the same with a control request
of another kind). Any other prompt is answered
with ``done: <prompt>``.
"""

from __future__ import annotations

import itertools
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aicli.actors.claude_process import ProcessExit
from aicli.contract import SessionSettings

_SLOW = re.compile(r"\[\[slow:([0-9.]+)\]\]")
_STOP, _KILL, _INTERRUPT, _RELEASE = "stop", "kill", "interrupt", "release"
_ANSWER = "answer"


@dataclass
class TurnRecord:
    workdir: str
    prompt: str
    process: int
    started: float
    ended: float | None = None
    how: str | None = None  # answered, interrupted, died, killed


class ScriptedClaude:
    """The factory and the record of every process and turn it ran."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.turns: list[TurnRecord] = []
        self.overlaps: list[tuple[TurnRecord, TurnRecord]] = []
        self.processes: list[ScriptedProcess] = []
        self._live: dict[str, TurnRecord] = {}
        self._numbers = itertools.count(1)

    def __call__(self, **options: Any) -> ScriptedProcess:
        process = ScriptedProcess(self, next(self._numbers), **options)
        with self.lock:
            self.processes.append(process)
        return process

    def prompts(self, workdir: str | None = None) -> list[str]:
        with self.lock:
            return [t.prompt for t in self.turns if workdir is None or t.workdir == workdir]

    def live(self) -> list[TurnRecord]:
        with self.lock:
            return list(self._live.values())

    def release(self, needle: str = "") -> int:
        """Let held turns whose prompt contains ``needle`` answer; how many were held."""
        count = 0
        for process in list(self.processes):
            turn = process.turn
            if turn is not None and needle in turn.prompt:
                process.inbox.put((_RELEASE, None))
                count += 1
        return count

    def kill_live(self, needle: str = "") -> int:
        """Make processes whose live turn's prompt contains ``needle`` die mid-turn."""
        count = 0
        for process in list(self.processes):
            turn = process.turn
            if turn is not None and needle in turn.prompt:
                process.inbox.put(("die", None))
                count += 1
        return count

    def _begin(self, turn: TurnRecord) -> None:
        with self.lock:
            other = self._live.get(turn.workdir)
            if other is not None:
                self.overlaps.append((other, turn))
            self._live[turn.workdir] = turn
            self.turns.append(turn)

    def _end(self, turn: TurnRecord, how: str) -> None:
        with self.lock:
            turn.ended, turn.how = time.monotonic(), how
            if self._live.get(turn.workdir) is turn:
                del self._live[turn.workdir]


class ScriptedProcess:
    """One stand-in process: a thread that plays turns from what is written to it."""

    start_time = None

    def __init__(
        self,
        script: ScriptedClaude,
        number: int,
        *,
        settings: SessionSettings,
        on_message: Callable[[dict[str, Any]], None],
        on_exit: Callable[[ProcessExit], None],
        resume: str | None = None,
        owner: str = "aicli",
        **_: Any,
    ) -> None:
        self.script = script
        self.number = number
        self.workdir = settings.workdir
        self.mark = f"{owner}/scripted-{number}"
        self.session_id = resume or str(uuid.uuid4())
        self.inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.turn: TurnRecord | None = None
        self.detached_sweeps = 0
        self.answers: list[dict[str, Any]] = []
        self._on_message = on_message
        self._on_exit = on_exit
        self._started = False
        self._stop_requested = False
        self._exited = threading.Event()
        self._cost = 0.0

    pid = None

    @property
    def alive(self) -> bool:
        return self._started and not self._exited.is_set()

    @property
    def usable(self) -> bool:
        return self.alive and not self._stop_requested

    def start(self) -> None:
        self._started = True
        threading.Thread(target=self._run, name=f"scripted-{self.number}", daemon=True).start()

    def send_prompt(self, content: str) -> None:
        self.inbox.put(("prompt", content))

    def interrupt(self) -> str:
        self.inbox.put((_INTERRUPT, None))
        return "req_scripted"

    def answer(self, request_id: str, response: dict[str, Any]) -> None:
        self.inbox.put((_ANSWER, response))

    def refuse(self, request_id: str, error: str) -> None:
        self.inbox.put((_ANSWER, {"error": error}))

    def stop(self, grace: float = 5.0) -> None:
        self._stop_requested = True
        self.inbox.put((_STOP, None))
        self._exited.wait(grace)

    def kill(self) -> None:
        self._stop_requested = True
        self.inbox.put((_KILL, None))
        self._exited.wait(5.0)

    def end_detached_tools(self) -> int:
        self.detached_sweeps += 1
        return 0

    # The process's own thread

    def _run(self) -> None:
        code = 0
        while True:
            kind, value = self.inbox.get()
            if kind == "prompt":
                how = self._play(value)
                if how in ("died", "killed", "stopped"):
                    code = {"died": 1, "killed": -9, "stopped": 0}[how]
                    break
            elif kind == _STOP:
                break
            elif kind in (_KILL, "die"):
                code = -9 if kind == _KILL else 1
                break
        self._exited.set()
        self._on_exit(ProcessExit(code, "", self._stop_requested))

    def _play(self, prompt: str) -> str:
        turn = TurnRecord(self.workdir, prompt, self.number, time.monotonic())
        self.turn = turn
        self.script._begin(turn)
        self._say({"type": "system", "subtype": "init", "session_id": self.session_id})
        how = self._wait_for_turn_end(prompt)
        if how in ("answered", "interrupted"):
            self._answer(prompt, interrupted=how == "interrupted")
        self.script._end(turn, how)
        self.turn = None
        return how

    def _wait_for_turn_end(self, prompt: str) -> str:
        if "[[die]]" in prompt:
            return "died"
        if "[[ask]]" in prompt or "[[control]]" in prompt:
            subtype = "can_use_tool" if "[[ask]]" in prompt else "mcp_message"
            how = self._ask(subtype, withdraw="[[withdraw]]" in prompt)
            if how is not None:
                return how
        held = "[[hold]]" in prompt
        slow = _SLOW.search(prompt)
        deadline = time.monotonic() + float(slow.group(1)) if slow else None
        if not held and deadline is None:
            return "answered"
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                kind, _ = self.inbox.get(timeout=timeout)
            except queue.Empty:
                return "answered"
            if kind == _RELEASE:
                return "answered"
            how = self._ended_by(kind)
            if how is not None:
                return how

    def _ask(self, subtype: str, *, withdraw: bool = False) -> str | None:
        """Ask to run a command and wait for the answer; how the turn ended, if it did.

        ``subtype``: ``can_use_tool``, or another the CLI could send (which aicli refuses);
        ``withdraw``: take the request back at once and go on without an answer.
        """
        request_id = f"scripted-{uuid.uuid4().hex[:8]}"
        given = {"command": "echo hi > hi.txt", "description": "Write a file"}
        request = {
            "subtype": subtype,
            "tool_name": "Bash",
            "input": given,
            "permission_suggestions": [],
            "tool_use_id": f"toolu_{request_id}",
        }
        self._say({"type": "control_request", "request_id": request_id, "request": request})
        if withdraw:
            self._say({"type": "control_cancel_request", "request_id": request_id})
            return None
        while True:
            kind, value = self.inbox.get()
            if kind == _ANSWER:
                self.answers.append(value)
                return None
            if kind == _INTERRUPT:
                self._say({"type": "control_cancel_request", "request_id": request_id})
            how = self._ended_by(kind)
            if how is not None:
                return how

    @staticmethod
    def _ended_by(kind: str) -> str | None:
        return {
            _INTERRUPT: "interrupted",
            "die": "died",
            _KILL: "killed",
            _STOP: "stopped",
        }.get(kind)

    def _answer(self, prompt: str, *, interrupted: bool) -> None:
        text = f"done: {prompt}" + ("\ud83d" if "[[surrogate]]" in prompt else "")
        self._say(
            {
                "type": "assistant",
                "message": {"content": [{"type": "text", "text": text}], "model": "scripted"},
            }
        )
        self._cost += 0.001
        result: dict[str, Any] = {
            "type": "result",
            "subtype": "error_during_execution" if interrupted else "success",
            "is_error": interrupted,
            "result": None if interrupted else text,
            "session_id": self.session_id,
            "num_turns": 1,
            "duration_ms": 1,
            "total_cost_usd": round(self._cost, 6),
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
        self._say(result)

    def _say(self, message: dict[str, Any]) -> None:
        self._on_message(message)
