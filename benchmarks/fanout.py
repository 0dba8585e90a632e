"""Do open event streams slow everyone else down? 50 SSE followers of one running task,
while other clients list tasks; the same reads without the streams as the baseline.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from typing import Any

import requests

from benchmarks.fake import FakeApi
from benchmarks.server import AicliServer
from benchmarks.stats import summary

STREAMS = 50
READERS = 4
SLOW_PROMPT = "[[slow: 5]]"
READ_SECONDS = 3.5


def _follow(port: int, path: str, count: int, deadline_s: float) -> list[bytes]:
    """Open ``count`` streams and read them all to their end on one thread.

    One selector, not 50 threads: 50 Python threads in the client would load the
    machine more than the server's side of the streams does.
    """
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Accept: text/event-stream\r\nConnection: close\r\n\r\n"
    ).encode()
    selector = selectors.DefaultSelector()
    received: dict[socket.socket, bytearray] = {}
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(request)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        received[sock] = bytearray()
    deadline = time.monotonic() + deadline_s
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            chunk = sock.recv(65536)
            if chunk:
                received[sock] += chunk
            else:
                selector.unregister(sock)
    for sock in received:
        sock.close()
    selector.close()
    return [bytes(data) for data in received.values()]


def _reads(url: str, seconds: float) -> list[float]:
    samples: list[float] = []
    deadline = time.perf_counter() + seconds

    def read() -> None:
        with requests.Session() as http:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                http.get(f"{url}/tasks?limit=50", timeout=30).raise_for_status()
                samples.append(time.perf_counter() - started)

    threads = [threading.Thread(target=read) for _ in range(READERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return samples


def measure(fake: FakeApi, quick: bool) -> dict[str, Any]:
    with AicliServer(fake) as server:
        client = server.client()
        session_id = client.open_session()["id"]
        client.run(session_id, "warm up [[say: ok]]")
        task_id = client.submit(session_id, f"baseline {SLOW_PROMPT}")["id"]
        baseline = _reads(server.url, READ_SECONDS)
        client.wait(task_id)

        task_id = client.submit(session_id, f"fan-out {SLOW_PROMPT}")["id"]
        streams: list[bytes] = []
        follower = threading.Thread(
            target=lambda: streams.extend(
                _follow(server.port, f"/tasks/{task_id}/events", STREAMS, 30)
            )
        )
        follower.start()
        time.sleep(0.5)
        loaded = _reads(server.url, READ_SECONDS)
        client.wait(task_id)
        follower.join()
    complete = [s for s in streams if s.startswith(b"HTTP/1.1 200") and b"completed" in s]
    return {
        "streams": STREAMS,
        "readers": READERS,
        "baseline_reads": summary(baseline),
        "reads_with_streams": summary(loaded),
        "streams_complete": len(complete),
    }
