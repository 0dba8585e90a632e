"""One long-lived Claude Code CLI process in stream-json mode.

A plain class, not an actor: the session actor owns one and must never block
on it. So every blocking thing happens on threads of its own: a reader turns
stdout lines into messages for ``on_message``, a writer feeds stdin, a stderr
reader keeps a bounded tail to explain a crash, and ``on_exit`` is called once
when the process is gone. Callbacks run on the reader thread; the session
actor's callbacks only ``tell`` it.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import subprocess
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import psutil

from aicli.actors import process_tree
from aicli.actors.claude_env import child_environment
from aicli.actors.stream import storable
from aicli.contract import ApprovalMode, PermissionMode, SessionSettings

log = logging.getLogger(__name__)

STDERR_TAIL_BYTES = 16 * 1024


@dataclass(frozen=True)
class ProcessExit:
    """How a CLI process ended: ``requested`` is true when we asked it to stop."""

    returncode: int | None
    stderr_tail: str
    requested: bool

    def describe(self) -> str:
        tail = self.stderr_tail.strip().splitlines()[-3:]
        said = f" It said: {' | '.join(tail)}" if tail else ""
        if self.requested:
            return f"The Claude process was stopped (code {self.returncode}) before the turn ended."
        return f"The Claude process exited unexpectedly with code {self.returncode}.{said}"


class ClaudeLike(Protocol):
    """What a session actor needs of its process: ``ClaudeProcess``, or a test's stand-in."""

    mark: str
    start_time: float | None

    @property
    def pid(self) -> int | None: ...

    @property
    def alive(self) -> bool: ...

    @property
    def usable(self) -> bool: ...

    def start(self) -> None: ...

    def send_prompt(self, content: str) -> None: ...

    def interrupt(self) -> str: ...

    def answer(self, request_id: str, response: dict[str, Any]) -> None: ...

    def refuse(self, request_id: str, error: str) -> None: ...

    def stop(self, grace: float = 5.0) -> None: ...

    def kill(self) -> None: ...

    def end_detached_tools(self) -> int: ...


def build_argv(claude_bin: str, settings: SessionSettings, resume: str | None) -> list[str]:
    argv = [
        claude_bin,
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
        # The session's config directory is writable inside the sandbox: its user settings
        # (hooks) and its MCP servers (.claude.json) are commands a tenant could leave there
        # for the next start, past the tools its policy allows. aicli gives the CLI neither;
        # the workdir's project settings are write-protected by srt.
        "--setting-sources",
        "project,local",
        "--strict-mcp-config",
    ]
    if resume:
        argv.append(f"--resume={resume}")
    if settings.model:
        argv += ["--model", settings.model]
    # Always said: without the flag the CLI takes ``defaultMode`` from its settings files,
    # which the sandboxed session can write (its config directory), so a tenant would
    # choose a mode its policy does not allow for the next process.
    argv += ["--permission-mode", settings.permission_mode or PermissionMode.DEFAULT]
    if settings.allowed_tools:
        argv += ["--allowedTools", ",".join(settings.allowed_tools)]
    if settings.disallowed_tools:
        argv += ["--disallowedTools", ",".join(settings.disallowed_tools)]
    if settings.tools is not None:
        # The only tools the CLI offers ("" none): one it lacks cannot run, whoever approves
        # it, whereas ``--allowedTools`` only says which uses run without asking.
        argv += ["--tools", ",".join(settings.tools)]
    if settings.append_system_prompt:
        argv += ["--append-system-prompt", settings.append_system_prompt]
    if settings.max_turns:
        argv += ["--max-turns", str(settings.max_turns)]
    if settings.approvals == ApprovalMode.ASK:
        # The CLI then asks us on stdout (``can_use_tool``) for each use its rules do not allow.
        argv += ["--permission-prompt-tool", "stdio"]
    return argv


class ClaudeProcess:
    """Start, talk to, interrupt and stop one CLI process."""

    def __init__(
        self,
        *,
        claude_bin: str,
        settings: SessionSettings,
        on_message: Callable[[dict[str, Any]], None],
        on_exit: Callable[[ProcessExit], None],
        resume: str | None = None,
        env: Mapping[str, str] | None = None,
        owner: str = "aicli",
        base_env: Mapping[str, str] | None = None,
        launcher: Sequence[str] = (),
    ) -> None:
        # ``launcher``: what runs the CLI, such as the sandbox runtime with its policy.
        self.argv = [*launcher, *build_argv(claude_bin, settings, resume)]
        self.workdir = settings.workdir
        self.mark = f"{owner}/{uuid.uuid4().hex}"
        self._env = child_environment(
            os.environ if base_env is None else base_env, env or {}, self.mark
        )
        self._on_message = on_message
        self._on_exit = on_exit
        self._popen: subprocess.Popen[bytes] | None = None
        self._writes: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._stderr: deque[bytes] = deque()
        self._stderr_size = 0
        self._stop_requested = False
        self._exited = threading.Event()
        self._request_ids = itertools.count(1)
        self.session_id: str | None = resume
        self.start_time: float | None = None
        self._stderr_reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def alive(self) -> bool:
        return self._popen is not None and not self._exited.is_set()

    @property
    def usable(self) -> bool:
        """Alive and not asked to stop: a prompt sent now will be answered."""
        return self.alive and not self._stop_requested

    def start(self) -> None:
        """Spawn the CLI; raises OSError if it cannot be executed."""
        self._popen = subprocess.Popen(
            self.argv,
            cwd=self.workdir,
            env=self._env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            self.start_time = psutil.Process(self._popen.pid).create_time()
        except psutil.NoSuchProcess:
            self.start_time = None
        name = f"claude-{self._popen.pid}"
        threading.Thread(target=self._read_stdout, name=f"{name}-out", daemon=True).start()
        self._stderr_reader = threading.Thread(
            target=self._read_stderr, name=f"{name}-err", daemon=True
        )
        self._stderr_reader.start()
        threading.Thread(target=self._write_stdin, name=f"{name}-in", daemon=True).start()
        threading.Thread(target=self._watch_root, name=f"{name}-root", daemon=True).start()

    def send_prompt(self, content: str | list[dict[str, Any]]) -> None:
        self._send({"type": "user", "message": {"role": "user", "content": content}})

    def interrupt(self) -> str:
        """Ask the CLI to end the current turn; the turn's ``result`` follows on stdout."""
        request_id = f"req_{next(self._request_ids)}_{uuid.uuid4().hex[:8]}"
        self._send(
            {
                "type": "control_request",
                "request_id": request_id,
                "request": {"subtype": "interrupt"},
            }
        )
        return request_id

    def answer(self, request_id: str, response: dict[str, Any]) -> None:
        """Answer the CLI's control request ``request_id`` (a ``can_use_tool``, say)."""
        self._send(
            {
                "type": "control_response",
                "response": {"subtype": "success", "request_id": request_id, "response": response},
            }
        )

    def refuse(self, request_id: str, error: str) -> None:
        """Answer a control request we do not serve with an error: the CLI must not wait."""
        self._send(
            {
                "type": "control_response",
                "response": {"subtype": "error", "request_id": request_id, "error": error},
            }
        )

    def stop(self, grace: float = 5.0) -> None:
        """Close stdin so the CLI flushes its transcript and exits; force it after ``grace``.

        Blocks for up to ``grace`` + a few seconds: call it from a thread of its own.
        """
        self._stop_requested = True
        if self._popen is None:
            return
        self._writes.put(None)
        if self._exited.wait(grace):
            return
        log.warning("claude %s did not exit on EOF within %.1fs; terminating", self.pid, grace)
        process_tree.terminate_then_kill(self._tree(), grace=2.0)
        self._exited.wait(5.0)

    def kill(self) -> None:
        """SIGKILL the CLI and every process it started, the setsid'd tools included."""
        self._stop_requested = True
        if self._popen is None:
            return
        process_tree.kill_all(self._tree())
        self._exited.wait(5.0)

    def end_detached_tools(self) -> int:
        """End every process carrying this CLI's mark but the CLI: what an interrupted turn's
        tools left running after detaching themselves; returns how many."""
        strays = [p for p in process_tree.marked_processes(self.mark) if p.pid != self.pid]
        if strays:
            log.info("claude %s: ending %d detached tool processes", self.pid, len(strays))
            process_tree.kill_all(strays)
        return len(strays)

    def _tree(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        if self._popen is not None and not self._exited.is_set():
            try:
                root = psutil.Process(self._popen.pid)
                found[root.pid] = root
            except psutil.NoSuchProcess:
                pass
            for child in process_tree.descendants(self._popen.pid):
                found[child.pid] = child
        for marked in process_tree.marked_processes(self.mark):
            found.setdefault(marked.pid, marked)
        return list(found.values())

    def _send(self, message: dict[str, Any]) -> None:
        self._writes.put((json.dumps(message) + "\n").encode())

    def _write_stdin(self) -> None:
        assert self._popen is not None and self._popen.stdin is not None
        stdin = self._popen.stdin
        while True:
            data = self._writes.get()
            try:
                if data is None:
                    stdin.close()
                    return
                stdin.write(data)
                stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                log.debug("claude %s: stdin closed", self._popen.pid)
                return

    def _read_stderr(self) -> None:
        assert self._popen is not None and self._popen.stderr is not None
        for line in self._popen.stderr:
            self._stderr.append(line)
            self._stderr_size += len(line)
            while self._stderr_size > STDERR_TAIL_BYTES and len(self._stderr) > 1:
                self._stderr_size -= len(self._stderr.popleft())

    def _read_stdout(self) -> None:
        assert self._popen is not None and self._popen.stdout is not None
        try:
            for raw in self._popen.stdout:
                self._take_line(raw)
                # Not held while the next line is awaited: a line can be a 10 MB answer.
                del raw
        finally:
            self._finish()

    def _take_line(self, raw: bytes) -> None:
        message = _parse_line(raw)
        if message is None:
            log.warning("claude %s: skipped a non-JSON line: %.200r", self.pid, raw)
            return
        if not isinstance(message, dict):
            return
        if message.get("type") == "system" and message.get("subtype") == "init":
            # Every turn starts with one; only a new session id is news.
            known = self.session_id
            self.session_id = message.get("session_id") or known
            if self.session_id == known:
                return
        self._deliver(message)

    def _deliver(self, message: dict[str, Any]) -> None:
        try:
            self._on_message(message)
        except Exception:
            log.exception("claude %s: the message callback failed", self.pid)

    def _watch_root(self) -> None:
        """When the process we started dies, what it started dies too. Its stdout closes only
        once they all have: under a launcher (srt), a killed launcher would otherwise leave
        the sandbox and the CLI in it running, holding the pipe, and the turn would hang."""
        assert self._popen is not None
        self._popen.wait()
        if not self._exited.is_set():
            process_tree.kill_all(process_tree.marked_processes(self.mark))

    def _finish(self) -> None:
        assert self._popen is not None
        returncode = self._popen.wait()
        leftovers = process_tree.marked_processes(self.mark)
        if leftovers:
            log.info("claude %s: ending %d leftover tool processes", self.pid, len(leftovers))
            process_tree.kill_all(leftovers)
        self._writes.put(None)
        if self._stderr_reader is not None:
            self._stderr_reader.join(timeout=1.0)
        self._exited.set()
        tail = b"".join(self._stderr).decode("utf-8", "replace")
        try:
            self._on_exit(ProcessExit(returncode, tail, self._stop_requested))
        except Exception:
            log.exception("claude %s: the exit callback failed", self.pid)


_decode = msgspec.json.Decoder().decode


def _parse_line(raw: bytes) -> Any:
    """A line of the CLI's stream as JSON, or None if it is not JSON.

    msgspec first (the stream is a few KB a turn); it refuses what it cannot
    decode exactly, such as an escaped lone surrogate, half an emoji Node cut
    in two. Those lines go through the standard library, which keeps the half,
    and ``storable`` then replaces it so every database can store the text.
    """
    try:
        return _decode(raw)
    except msgspec.DecodeError:
        pass
    text = raw.decode("utf-8", "replace")
    try:
        message = json.loads(text)
    except ValueError:
        return None
    return storable(message) if "\\ud" in text or "\\uD" in text else message
