"""aicli as its users run it: ``aicli serve`` in a process of its own, and a thin client.

Every benchmark gets a fresh server and database, so no benchmark measures the
leftovers of another (1,000 idle sessions, a million rows).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from aicli.actors.claude_bin import find_claude
from aicli.contract import TERMINAL_STATUSES
from aicli.settings import Settings
from benchmarks.fake import FakeApi

STARTUP_DEADLINE_S = 60.0

# Sizes only: room for 16 live sessions and 160 tasks queued in one session in the
# throughput run, and 1,000 sessions in the memory run. Threads and stream slots
# stay at aicli's defaults: the defaults are what must serve the numbers (500
# streams and 100 long-polls in the fan-out run included).
DEFAULT_SETTINGS = {
    "AICLI_MAX_LIVE_PROCESSES": "32",
    "AICLI_MAX_SESSIONS": "2000",
    "AICLI_MAX_PENDING_PER_SESSION": "1000",
}
# The defaults worth recording beside the numbers they served (if this aicli has them).
REPORTED_DEFAULTS = ("threads", "max_streams", "connection_limit")


def default_settings_text() -> str:
    """What a benchmark server runs with: our overrides, then the aicli defaults that matter."""
    defaults = Settings()
    shown = [f"{name}={value}" for name, value in DEFAULT_SETTINGS.items()]
    shown += [
        f"{name}={getattr(defaults, name)} (default)"
        for name in REPORTED_DEFAULTS
        if hasattr(defaults, name)
    ]
    return ", ".join(shown)


class ServerUnavailable(RuntimeError):
    """``aicli serve`` is missing or did not come up: the aicli side of a benchmark is skipped."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def aicli_executable() -> str:
    return str(Path(sys.executable).with_name("aicli"))


class AicliServer:
    """``with AicliServer(fake) as server:`` serves on a free port until the block ends."""

    def __init__(
        self,
        fake: FakeApi,
        settings: Mapping[str, str] | None = None,
        database: Path | None = None,
        executable: str | None = None,
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="aicli-bench-server-")
        self.database = database or Path(self._tmp.name) / "b.db"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_path = Path(self._tmp.name) / "server.log"
        self._env = {
            **fake.cli_env(fake.new_home()),
            **DEFAULT_SETTINGS,
            "AICLI_STATE_DIR": str(Path(self._tmp.name) / "state"),  # gone with the server
            **(settings or {}),
        }
        # ``--ref``'s ``aicli`` runs the same CLI as ours: only the server differs.
        self._env.setdefault("AICLI_CLAUDE_BIN", find_claude())
        self.executable = executable or aicli_executable()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def settings(self) -> Settings:
        """The settings this server resolves from its environment, as ``aicli serve`` does."""
        return Settings.resolve(environ=self._env)

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def __enter__(self) -> AicliServer:
        argv = [
            self.executable,
            "serve",
            "--port",
            str(self.port),
            "--database-url",
            f"sqlite:///{self.database}",
        ]
        with open(self._log_path, "wb") as log:
            try:
                self._process = subprocess.Popen(
                    argv, env=self._env, cwd=self._tmp.name, stdout=log, stderr=log
                )
            except OSError as exc:
                self._tmp.cleanup()
                raise ServerUnavailable(f"`aicli serve` could not start: {exc}") from exc
        try:
            self._wait_healthy()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServerUnavailable(
                    f"`aicli serve` exited with {self._process.returncode}: {self.log_tail()}"
                )
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise ServerUnavailable(f"`aicli serve` not healthy in {STARTUP_DEADLINE_S:.0f} s")

    def client(self) -> Client:
        """A client whose sessions' workdirs go away with the server."""
        return Client(self.url, self._tmp.name)

    def log_tail(self, lines: int = 5) -> str:
        text = self._log_path.read_text(errors="replace") if self._log_path.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def __exit__(self, *exc: object) -> None:
        """SIGTERM, as an operator would stop it, so it stops its Claude processes too."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        self._tmp.cleanup()


class Client:
    """The calls a user of aicli makes, over one keep-alive connection."""

    def __init__(self, url: str, scratch: str) -> None:
        self.url = url
        self.scratch = scratch
        self.http = requests.Session()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, f"{self.url}{path}", timeout=90, **kwargs)
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    def open_session(self) -> dict[str, Any]:
        workdir = tempfile.mkdtemp(prefix="wd-", dir=self.scratch)
        return self._call("POST", "/sessions", json={"workdir": workdir})

    def get_session(self, session_id: str) -> dict[str, Any]:
        return self._call("GET", f"/sessions/{session_id}")

    def close_session(self, session_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/sessions/{session_id}")

    def submit(self, session_id: str, command: str) -> dict[str, Any]:
        return self._call("POST", f"/sessions/{session_id}/tasks", json={"command": command})

    def submit_waiting(
        self, session_id: str, command: str, wait: float = 30
    ) -> tuple[dict[str, Any], bool]:
        """POST with ``Prefer: wait``: the task, and whether the server waited for its end.

        A server that honours the preference answers 200 with the terminal task and
        ``Preference-Applied``; one that does not (or whose wait ran out) answers
        202 with the task as accepted, and the caller has to long-poll.
        """
        response = self.http.post(
            f"{self.url}/sessions/{session_id}/tasks",
            json={"command": command},
            headers={"Prefer": f"wait={wait:g}"},
            timeout=wait + 60,
        )
        if response.status_code not in (200, 202):
            raise RuntimeError(
                f"POST /sessions/{session_id}/tasks (Prefer: wait): "
                f"{response.status_code} {response.text[:300]}"
            )
        task = response.json()
        applied = (
            response.status_code == 200
            and "wait" in response.headers.get("Preference-Applied", "")
            and task["status"] in TERMINAL_STATUSES
        )
        return task, applied

    def get_task(self, task_id: str, wait: float = 0) -> dict[str, Any]:
        params = {"wait": wait} if wait else None
        return self._call("GET", f"/tasks/{task_id}", params=params)

    def wait(self, task_id: str, deadline_s: float = 120) -> dict[str, Any]:
        """Long-poll until the task is terminal; raise unless it completed."""
        deadline = time.monotonic() + deadline_s
        while True:
            task = self.get_task(task_id, wait=30)
            if task["status"] in TERMINAL_STATUSES:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"task {task_id} not done in {deadline_s} s: {task}")
        if task["status"] != "completed":
            raise RuntimeError(f"task {task_id} ended {task['status']}: {task.get('error')}")
        return task

    def run(self, session_id: str, command: str) -> dict[str, Any]:
        return self.wait(self.submit(session_id, command)["id"])

    def list_tasks(self, **params: Any) -> dict[str, Any]:
        return self._call("GET", "/tasks", params=params)
