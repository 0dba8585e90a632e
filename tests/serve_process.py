"""``aicli serve`` as a real subprocess, for tests that kill it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import requests

from aicli.actors import process_tree
from aicli.runtime import owner_prefix
from aicli.testing.waiting import wait_for

AICLI = str(Path(sys.executable).with_name("aicli"))


def aicli_children(database_url: str) -> list[psutil.Process]:
    """Processes started by any run on this database (other tests' servers use others)."""
    return process_tree.marked_processes(owner_prefix(database_url), prefix=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    def __init__(
        self,
        database_url: str,
        env: dict[str, str],
        log_path: Path,
        *args: str,
        port: int | None = None,
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [AICLI, "serve", "--port", str(self.port), "--database-url", database_url]
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.popen = subprocess.Popen(
            [*command, *args],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._healthy, timeout=30, what="aicli serve to answer /healthz")

    def _healthy(self) -> bool:
        if self.popen.poll() is not None:
            raise AssertionError(f"aicli serve exited early:\n{self.log_path.read_text()}")
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).ok
        except requests.ConnectionError:
            return False

    def signal(self, sig: int) -> None:
        os.kill(self.popen.pid, sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        finally:
            self._log.close()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.signal(signal.SIGKILL)
        self.wait(10)


def submit(url: str, session_id: str, command: str) -> str:
    response = requests.post(
        f"{url}/sessions/{session_id}/tasks", json={"command": command}, timeout=10
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def task(url: str, task_id: str, wait: float = 0) -> dict:
    response = requests.get(f"{url}/tasks/{task_id}", params={"wait": wait}, timeout=wait + 10)
    assert response.status_code == 200, response.text
    return response.json()
