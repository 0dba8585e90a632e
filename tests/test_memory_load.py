"""The memory a real ``aicli serve`` takes under one user's heavy load, and gives back.

The load of issue 25: a task with a 10 MB answer followed by 20 slow SSE readers at
once, 40 tasks with ~1 MB of metadata each, and 8 lists of ``limit=200`` at once. The
server (and its children other than the Claude CLIs, which are not ours to bound)
must stay within +400 MB of its start at the peak, sampled throughout, and be back
within +120 MB of it once the readers have left.

Measured on two cores (start, peak, after): the old code 48, 1589-2373, 769-1164 MB;
with glibc's thresholds fixed alone (``http.heap``) 49, 1918, 236 MB; with everything
of this change 48, 344-421, 132-152 MB.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psutil
import pytest
import requests

from tests.serve_process import ServeProcess, submit, task

pytest_plugins = ("tests.serve_fixtures",)

MB = 1024 * 1024
ANSWER_CHARS = 10_000_000
READERS = 20
METADATA_TASKS = 40
METADATA_CHARS = 1_000_000  # with the command, just under the 1 MiB body limit
LISTS = 8
PEAK_BOUND = 400 * MB
AFTER_BOUND = 120 * MB
# How long each reader reads, and how fast: far slower than the server can write.
READ_SECONDS = 6.0
READ_CHUNK = 64 * 1024
READ_PAUSE_S = 0.1


def ours(server: ServeProcess) -> list[psutil.Process]:
    """The server and its children, less the Claude CLIs and what runs under them."""
    found = []
    pending = [psutil.Process(server.popen.pid)]
    while pending:
        process = pending.pop()
        try:
            if "claude" in " ".join(process.cmdline()):
                continue
            found.append(process)
            pending.extend(process.children())
        except psutil.NoSuchProcess:
            continue
    return found


def rss(server: ServeProcess) -> int:
    total = 0
    for process in ours(server):
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


class Sampler:
    """The server's RSS, sampled every 20 ms on a thread of its own; ``peak`` is the most."""

    def __init__(self, server: ServeProcess) -> None:
        self.server = server
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.server))
            self._stop.wait(0.02)

    @contextmanager
    def running(self) -> Iterator[Sampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)


def settled(server: ServeProcess, bound: int, timeout: float) -> int:
    """The server's RSS once it is at most ``bound``, or after ``timeout`` s if it never is."""
    deadline = time.monotonic() + timeout
    while (now := rss(server)) > bound and time.monotonic() < deadline:
        time.sleep(0.1)
    return now


def slow_reader(server: ServeProcess, task_id: str, started: threading.Barrier) -> int:
    """Follow the task's events over SSE, reading slowly from a small socket buffer, then
    hang up: what a client on a poor link does. The bytes read."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(
            f"GET /tasks/{task_id}/events HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        got = len(sock.recv(READ_CHUNK))
        started.wait(30)
        deadline = time.monotonic() + READ_SECONDS
        while time.monotonic() < deadline:
            chunk = sock.recv(READ_CHUNK)
            if not chunk:
                break
            got += len(chunk)
            time.sleep(READ_PAUSE_S)
        return got


def list_all(server: ServeProcess) -> int:
    """Every task, in pages of ``limit=200`` (which a page may stop short of); how many."""
    seen, cursor = 0, None
    while True:
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        response = requests.get(f"{server.url}/tasks", params=params, timeout=60)
        assert response.status_code == 200, response.text[:200]
        page = response.json()
        seen += len(page["data"])
        if not page["has_more"]:
            return seen
        cursor = page["next_cursor"]


def open_session(server: ServeProcess, workdir: str) -> str:
    response = requests.post(f"{server.url}/sessions", json={"workdir": workdir}, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def with_metadata(server: ServeProcess, session_id: str, n: int) -> None:
    body = {"command": f"[[say: {n}]]", "metadata": {"blob": f"{n:07d}" * (METADATA_CHARS // 7)}}
    response = requests.post(f"{server.url}/sessions/{session_id}/tasks", json=body, timeout=30)
    assert response.status_code == 202, response.text[:200]


@pytest.mark.timeout(120)
def test_memory_stays_bounded_under_one_users_load_and_is_given_back(serve, workdir):
    server = serve()
    start = rss(server)
    with Sampler(server).running() as sampler:
        session_id = open_session(server, workdir)
        big = submit(server.url, session_id, f"[[big: {ANSWER_CHARS}]]")
        assert len(task(server.url, big, wait=60)["output"]) == ANSWER_CHARS
        # Accepted, then cancelled by the close of their session: 40 ended tasks.
        heavy = open_session(server, workdir)
        for n in range(METADATA_TASKS):
            with_metadata(server, heavy, n)
        requests.delete(f"{server.url}/sessions/{heavy}", timeout=30).raise_for_status()

        started = threading.Barrier(READERS + 1)
        with ThreadPoolExecutor(READERS + LISTS) as pool:
            readers = [pool.submit(slow_reader, server, big, started) for _ in range(READERS)]
            started.wait(30)
            lists = [pool.submit(list_all, server) for _ in range(LISTS)]
            assert [found.result() for found in lists] == [METADATA_TASKS + 1] * LISTS
            assert all(reader.result() > 0 for reader in readers)
        during = sampler.peak
    after = settled(server, start + AFTER_BOUND, timeout=15)
    seen = (
        f"RSS at the start {start / MB:.0f} MB, at the peak {during / MB:.0f} MB,"
        f" after {after / MB:.0f} MB"
    )
    print(seen)
    assert during - start <= PEAK_BOUND, seen
    assert after - start <= AFTER_BOUND, seen
