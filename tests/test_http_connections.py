"""Connections: clients that stall or pile up never lock the others out."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import psutil
import pytest
import requests

from aicli.testing.waiting import wait_for
from tests.http_server import Client, serving
from tests.serve_process import AICLI, free_port

# A request without its final blank line: the server waits for the rest.
HALF_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
# What a distribution commonly starts processes with.
LOW_SOFT_LIMIT = 512


@contextmanager
def half_sent(url: str, count: int) -> Iterator[list[socket.socket]]:
    address = urlsplit(url)
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection((address.hostname, address.port), timeout=5)
            sockets.append(sock)
            sock.sendall(HALF_REQUEST)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def test_half_sent_requests_do_not_lock_out_other_clients(runtime):
    with serving(runtime) as url, half_sent(url, 200):
        started = time.monotonic()
        response = requests.get(f"{url}/healthz", timeout=5)
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed < 1.0


@contextmanager
def descriptors_taken_below(number: int) -> Iterator[None]:
    """Every descriptor below ``number`` in use, so the next socket is numbered past it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = number + 512
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard open-file limit {hard} is below {wanted}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    fillers = [os.open(os.devnull, os.O_RDONLY)]
    try:
        while fillers[-1] < number:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_server_answers_on_sockets_numbered_past_1024(runtime):
    # select() refuses descriptors from 1024 on; the loop must not use it.
    with descriptors_taken_below(1100), serving(runtime) as url, half_sent(url, 20):
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200


def lower_open_file_limit() -> None:
    """Runs in the child before exec: start it the way many systems start services."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT_LIMIT, hard))


class Served(NamedTuple):
    client: Client
    pid: int


@pytest.fixture
def low_limit_serve(tmp_path: Path, claude_bin, claude_env) -> Iterator[Served]:
    """``aicli serve --connection-limit 1500 --channel-timeout 1``, started at a low soft limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 2000:
        pytest.skip(f"the hard open-file limit {hard} leaves nothing to raise")
    port = free_port()
    command = [AICLI, "serve", "--port", str(port), "--database-url", f"sqlite:///{tmp_path}/a.db"]
    options = ["--connection-limit", "1500", "--channel-timeout", "1"]
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*command, *options],
            env={**os.environ, **claude_env, "AICLI_CLAUDE_BIN": claude_bin},
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lower_open_file_limit,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, f"aicli serve exited:\n{log_path.read_text()}"
        try:
            return requests.get(f"{url}/healthz", timeout=1).ok
        except requests.ConnectionError:
            return False

    try:
        wait_for(healthy, timeout=30, what="aicli serve to answer /healthz")
        yield Served(Client(url), process.pid)
    finally:
        process.kill()
        process.wait(10)


def test_serve_raises_its_open_file_limit_to_fit_the_connection_limit(low_limit_serve):
    soft, _ = psutil.Process(low_limit_serve.pid).rlimit(psutil.RLIMIT_NOFILE)
    assert soft == resource.RLIM_INFINITY or soft >= 1500


def test_stalled_connections_are_closed_after_the_channel_timeout(low_limit_serve):
    with half_sent(low_limit_serve.client.base_url, 1) as (sock,):
        sock.settimeout(10)
        # The server hangs up (recv sees the end) within the timeout plus one sweep.
        assert sock.recv(1024) == b""


def test_a_long_poll_outlives_the_channel_timeout(low_limit_serve, workdir):
    client = low_limit_serve.client
    session = client.open_session(workdir)
    task = client.submit(session["id"], "[[slow: 10]] [[say: late]]")
    # Held three times the timeout: only a cut connection would fail it.
    response = client.get(f"/tasks/{task['id']}", params={"wait": 3})
    assert response.status_code == 200
    assert response.json()["status"] in ("pending", "running")
    client.delete(f"/tasks/{task['id']}")
