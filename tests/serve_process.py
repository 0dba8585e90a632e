"""``aicli serve`` as a real subprocess, for tests that kill it."""

from __future__ import annotations

import fcntl
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
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


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out for a client's end of a connection."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Below the ephemeral range: a port there is never taken by some client's connection
# between our check and the server's bind (a port 0 bind draws from that range).
_PORTS = range(max(1024, _ephemeral_low() - 12000), _ephemeral_low())
# One lock file per port, machine-wide: workers of this run and of runs beside it.
_LOCKS = Path(tempfile.gettempdir()) / "aicli-test-ports"
_reserved: dict[int, int] = {}  # port -> the descriptor whose lock reserves it


def free_port() -> int:
    """A port no other test on the machine takes until this test ends (``release_ports``):
    a server restarted on it, or a client that must find nobody there, finds it free.

    A port 0 bind that is closed again leaves the port to whoever binds next (another
    test's server, or a client's connection); a lock held until the test ends does not.
    """
    _LOCKS.mkdir(exist_ok=True)
    for _ in range(1000):
        port = random.choice(_PORTS)
        if port in _reserved:
            continue
        fd = os.open(_LOCKS / str(port), os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))  # nobody else (not a test) holds it
        except OSError:
            os.close(fd)
            continue
        _reserved[port] = fd
        return port
    raise AssertionError(f"no free port in {_PORTS}")


def release_ports() -> None:
    """Give back every port ``free_port`` reserved (after the test's servers stopped)."""
    while _reserved:
        os.close(_reserved.popitem()[1])


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
        try:
            wait_for(self._healthy, timeout=60, what="aicli serve to answer /healthz")
        except BaseException:
            self.stop()  # not yet in any fixture's list: nobody else would stop it
            raise

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
