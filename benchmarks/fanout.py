"""Fan-out: 500 SSE streams and 100 long-polls at once, on the server's default settings.

Watchers are cheap for a client to open and easy for a server to choke on: each
may pin a worker thread, and every event is written to every stream. Here a few
sessions each run a task that emits events over several seconds, and one client
process opens ``STREAMS`` event streams and ``LONG_POLLS`` long-polls on those
tasks at once. The run counts what was refused (503, or a connection that
failed), checks every stream against the task's stored event log (every event,
in order, none twice) and every long-poll for the finished task, and meanwhile
times ``GET /tasks/{id}`` from another client: watchers must not slow readers.

The streams are read by one selector loop in a process of its own, so 600
connections cost the client one thread and none of the GIL the timed reads
need. Nothing is tuned for the run: threads and stream slots are aicli's
defaults (see ``server.DEFAULT_SETTINGS``), since the defaults are what users get.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import queue
import resource
import selectors
import socket
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil
import requests

from aicli.contract import TERMINAL_STATUSES
from benchmarks.fake import FakeApi
from benchmarks.server import AicliServer, Client
from benchmarks.stats import summary

STREAMS = 500
LONG_POLLS = 100
SESSIONS = 5
# Sockets beyond the watchers: the timed reads, the client's own files.
FD_HEADROOM = 64
# How long the opening may take before the timed reads start anyway.
OPEN_DEADLINE_S = 15.0
# The reads end this long before the tasks are due to, so they only see open streams.
READ_MARGIN_S = 1.0


@dataclass(frozen=True)
class Timing:
    """A fan-out task's two stages, and how long each timed read runs.

    The task calls Bash (``sleep``), then streams its reply slowly: events at its
    start (running, the tool call), after the sleep (the tool's result) and at its
    end (the reply, the result, completed). A stream opened at the start gets the
    first events replayed and the rest live, as a watcher usually does.
    """

    sleep_s: float
    stream_s: float
    read_s: float
    baseline_s: float

    def command(self, index: int) -> str:
        bash = f"[[bash: sleep {self.sleep_s:g}; echo done]]"
        return f"fan-out {index} {bash} [[slow: {self.stream_s:g}]]"

    @property
    def task_s(self) -> float:
        return self.sleep_s + self.stream_s


QUICK = Timing(sleep_s=4, stream_s=3, read_s=4, baseline_s=2.5)
FULL = Timing(sleep_s=5, stream_s=5, read_s=6, baseline_s=4)


def raise_open_files(needed: int) -> int:
    """Lift this process's soft RLIMIT_NOFILE to the hard one; fail if that is too few."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < needed:
        raise RuntimeError(f"{needed} open files needed, the hard limit is {hard}")
    return soft


# -- the watchers' side, in a process of its own -------------------------------------------


@dataclass
class _Conn:
    """One watcher: its request, the raw bytes it got back, and when things happened."""

    kind: str  # "stream" or "poll"
    task_id: str
    out: bytes
    sock: socket.socket
    raw: bytearray = field(default_factory=bytearray)
    status: int | None = None
    error: str | None = None
    started_at: float = 0.0
    sent_at: float | None = None
    headers_at: float | None = None
    ended_at: float | None = None
    connected: bool = False


def _request(port: int, kind: str, task_id: str) -> bytes:
    if kind == "stream":
        target, accept = f"/tasks/{task_id}/events", "text/event-stream"
    else:
        target, accept = f"/tasks/{task_id}?wait=30", "application/json"
    return (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Accept: {accept}\r\nConnection: close\r\n\r\n"
    ).encode()


def _watch(port: int, plan: dict[str, Any], outbox: Any) -> list[dict[str, Any]]:
    """Open every watcher at once, tell ``outbox`` when all are open, read all to their end.

    "Open" is a stream's response head received (or its refusal), and a
    long-poll's request sent: a long-poll answers only when its task ends.
    """
    selector = selectors.DefaultSelector()
    conns: list[_Conn] = []
    for kind, task_id in plan["watchers"]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        conn = _Conn(kind, task_id, _request(port, kind, task_id), sock)
        conn.started_at = time.monotonic()
        code = sock.connect_ex(("127.0.0.1", port))
        if code not in (0, errno.EINPROGRESS):
            conn.error = f"connect: {os.strerror(code)}"
            conn.ended_at = time.monotonic()
            sock.close()
        else:
            selector.register(sock, selectors.EVENT_WRITE, conn)
        conns.append(conn)
    first = conns[0].started_at if conns else time.monotonic()
    unopened = sum(1 for conn in conns if conn.error is None)
    told = False

    def finish(conn: _Conn, error: str | None = None) -> None:
        nonlocal unopened
        if conn.error is None and error is not None:
            conn.error = error
        if not _is_open(conn):
            unopened -= 1
        conn.ended_at = time.monotonic()
        selector.unregister(conn.sock)
        conn.sock.close()

    deadline = time.monotonic() + plan["deadline_s"]
    while selector.get_map() and time.monotonic() < deadline:
        for key, mask in selector.select(timeout=0.2):
            conn = key.data
            if mask & selectors.EVENT_WRITE:
                if not conn.connected:
                    code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if code:
                        finish(conn, f"connect: {os.strerror(code)}")
                        continue
                    conn.connected = True
                try:
                    conn.out = conn.out[conn.sock.send(conn.out) :]
                except BlockingIOError:
                    continue
                except OSError as exc:
                    finish(conn, f"send: {exc}")
                    continue
                if not conn.out:
                    conn.sent_at = time.monotonic()
                    selector.modify(conn.sock, selectors.EVENT_READ, conn)
                    if conn.kind == "poll":
                        unopened -= 1
                continue
            try:
                chunk = conn.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                finish(conn, f"recv: {exc}")
                continue
            if not chunk:
                finish(conn)
                continue
            conn.raw += chunk
            if conn.status is None and b"\r\n\r\n" in conn.raw:
                conn.status = int(conn.raw.split(b" ", 2)[1])
                conn.headers_at = time.monotonic()
                if conn.kind == "stream":
                    unopened -= 1
        if not told and (unopened <= 0 or time.monotonic() - first > OPEN_DEADLINE_S):
            told = True
            outbox.put(("opened", time.monotonic() - first))
    if not told:
        outbox.put(("opened", time.monotonic() - first))
    for key in list(selector.get_map().values()):
        key.data.error = key.data.error or "still open at the deadline"
        key.fileobj.close()  # type: ignore[union-attr]
    selector.close()
    return [_outcome(conn) for conn in conns]


def _is_open(conn: _Conn) -> bool:
    """Counted as opened already (see ``_watch``)."""
    return (conn.kind == "stream" and conn.status is not None) or (
        conn.kind == "poll" and conn.sent_at is not None
    )


def _split(raw: bytes) -> tuple[int | None, dict[str, str], bytes, bool]:
    """Status, headers, body (de-chunked) and whether the body ended properly."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return None, {}, b"", False
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() != "chunked":
        return status, headers, body, True
    out = bytearray()
    while True:
        size_line, sep, rest = body.partition(b"\r\n")
        if not sep:
            return status, headers, bytes(out), False
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return status, headers, bytes(out), True
        out += rest[:size]
        if len(rest) < size + 2:
            return status, headers, bytes(out), False
        body = rest[size + 2 :]


def _sse_events(body: bytes) -> list[dict[str, Any]]:
    """The events of an SSE body, as the JSON each frame's ``data`` carries."""
    events = []
    # A frame ends with a blank line: what follows the last one is a frame cut short.
    for frame in body.decode(errors="replace").split("\n\n")[:-1]:
        data = [line[5:].lstrip(" ") for line in frame.split("\n") if line.startswith("data:")]
        if data:
            events.append(json.loads("\n".join(data)))
    return events


def _task_status(body: bytes) -> str | None:
    try:
        return json.loads(body)["status"]
    except (ValueError, KeyError, TypeError):
        return None  # cut short, or not a task


def _outcome(conn: _Conn) -> dict[str, Any]:
    status, _, body, whole = _split(bytes(conn.raw))
    outcome: dict[str, Any] = {
        "kind": conn.kind,
        "task_id": conn.task_id,
        "status": status,
        "error": conn.error,
        "whole": whole,
        "started_at": conn.started_at,
        "headers_at": conn.headers_at,
        "ended_at": conn.ended_at,
    }
    if status == 200 and conn.kind == "stream":
        outcome["events"] = _sse_events(body)
    elif status == 200:
        outcome["task_status"] = _task_status(body) if whole else None
    return outcome


def _watcher_process(port: int, inbox: Any, outbox: Any) -> None:
    """The watchers' process: ready, a plan in, "opened", then every outcome out."""
    try:
        raise_open_files(STREAMS + LONG_POLLS + FD_HEADROOM)
        outbox.put(("ready", None))
        plan = inbox.get()
        if plan is not None:  # None: the benchmark failed before it needed us
            outbox.put(("done", _watch(port, plan, outbox)))
    except Exception:
        outbox.put(("error", traceback.format_exc()))


# -- the server's and the reader's side, in the benchmark's process ---------------------------


def _timed_reads(url: str, task_ids: list[str], seconds: float) -> tuple[list[float], int]:
    """Sequential ``GET /tasks/{id}`` over the tasks for ``seconds``: latencies, non-200s."""
    samples: list[float] = []
    errors = 0
    with requests.Session() as http:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            task_id = task_ids[len(samples) % len(task_ids)]
            started = time.perf_counter()
            response = http.get(f"{url}/tasks/{task_id}", timeout=30)
            samples.append(time.perf_counter() - started)
            errors += response.status_code != 200
    return samples, errors


def _event_log(client: Client, task_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        after = events[-1]["seq"] if events else 0
        page = client._call("GET", f"/tasks/{task_id}/events", params={"after": after})
        events += page["data"]
        if not page["has_more"]:
            return events


def _wait_running(client: Client, task_ids: list[str], deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while any(client.get_task(task_id)["status"] == "pending" for task_id in task_ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"fan-out tasks not running after {deadline_s} s")
        time.sleep(0.02)


def _receive(outbox: Any, kind: str, timeout: float) -> Any:
    try:
        got, payload = outbox.get(timeout=timeout)
    except queue.Empty:
        raise RuntimeError(f"the watchers' process sent no {kind!r} in {timeout:.0f} s") from None
    if got == "error":
        raise RuntimeError(f"the watchers' process failed:\n{payload}")
    if got != kind:
        raise RuntimeError(f"the watchers' process sent {got!r}, not {kind!r}")
    return payload


def _peak_open(streams: list[dict[str, Any]]) -> int:
    """Most streams open (head received, not yet ended) at one moment."""
    moments = []
    for stream in streams:
        if stream["status"] == 200 and stream["headers_at"] is not None:
            moments.append((stream["headers_at"], 1))
            moments.append((stream["ended_at"] or float("inf"), -1))
    peak = current = 0
    for _, step in sorted(moments):
        current += step
        peak = max(peak, current)
    return peak


def _tally(
    outcomes: list[dict[str, Any]],
    logs: dict[str, list[dict[str, Any]]],
    window: tuple[float, float],
) -> dict[str, Any]:
    streams = [o for o in outcomes if o["kind"] == "stream"]
    polls = [o for o in outcomes if o["kind"] == "poll"]
    accepted = [s for s in streams if s["status"] == 200]
    complete = [s for s in accepted if s["whole"] and s["events"] == logs[s["task_id"]]]
    answered = [
        p for p in polls if p["status"] == 200 and p.get("task_status") in TERMINAL_STATUSES
    ]
    heads = [s["headers_at"] - s["started_at"] for s in accepted]
    start, end = window
    return {
        "streams_opened": len(accepted),
        "streams_refused_503": sum(1 for s in streams if s["status"] == 503),
        "streams_failed": sum(1 for s in streams if s["status"] is None),
        "streams_other_status": sum(1 for s in streams if s["status"] not in (None, 200, 503)),
        "streams_complete": len(complete),
        "streams_peak_open": _peak_open(streams),
        "streams_open_through_reads": sum(
            1
            for s in accepted
            if s["headers_at"] <= start and (s["ended_at"] is None or s["ended_at"] >= end)
        ),
        "stream_head": summary(heads),
        "long_polls_answered": len(answered),
        "long_polls_refused_503": sum(1 for p in polls if p["status"] == 503),
        "long_polls_failed": sum(1 for p in polls if p["status"] is None),
        "events_per_task": sorted({len(log) for log in logs.values()}),
        "errors_seen": sorted({o["error"] for o in outcomes if o["error"]})[:5],
    }


def measure(fake: FakeApi, quick: bool) -> dict[str, Any]:
    timing = QUICK if quick else FULL
    raise_open_files(STREAMS + LONG_POLLS + FD_HEADROOM)
    context = multiprocessing.get_context("spawn")
    inbox, outbox = context.Queue(), context.Queue()
    with AicliServer(fake) as server:
        watchers = context.Process(
            target=_watcher_process, args=(server.port, inbox, outbox), daemon=True
        )
        watchers.start()
        try:
            return _run(server, timing, inbox, outbox)
        finally:
            inbox.put(None)
            watchers.join(timeout=10)
            if watchers.is_alive():
                watchers.kill()


def _run(server: AicliServer, timing: Timing, inbox: Any, outbox: Any) -> dict[str, Any]:
    client = server.client()
    process = psutil.Process(server.pid)
    session_ids = [client.open_session()["id"] for _ in range(SESSIONS)]
    for session_id in session_ids:
        client.run(session_id, "warm up [[say: ok]]")

    # Baseline: the same reads while tasks run but nobody watches.
    baseline_ids = [
        client.submit(session_id, f"baseline [[slow: {timing.baseline_s + READ_MARGIN_S:g}]]")["id"]
        for session_id in session_ids
    ]
    _wait_running(client, baseline_ids)
    baseline, baseline_errors = _timed_reads(server.url, baseline_ids, timing.baseline_s)
    for task_id in baseline_ids:
        client.wait(task_id)

    _receive(outbox, "ready", 60)
    task_ids = [client.submit(sid, timing.command(i))["id"] for i, sid in enumerate(session_ids)]
    due = time.monotonic() + timing.task_s
    _wait_running(client, task_ids)
    # Interleaved, so that streams and long-polls of every task compete for the same slots.
    watchers = [("stream", task_ids[i % SESSIONS]) for i in range(STREAMS)]
    for i in range(LONG_POLLS):
        watchers.insert(i * (STREAMS + LONG_POLLS) // LONG_POLLS, ("poll", task_ids[i % SESSIONS]))
    inbox.put({"watchers": watchers, "deadline_s": timing.task_s + 30})
    open_s = _receive(outbox, "opened", OPEN_DEADLINE_S + 30)

    threads = process.num_threads()
    read_s = min(timing.read_s, due - time.monotonic() - READ_MARGIN_S)
    started = time.monotonic()
    loaded, loaded_errors = _timed_reads(server.url, task_ids, max(read_s, 0.5))
    window = (started, time.monotonic())
    outcomes = _receive(outbox, "done", timing.task_s + 60)
    for task_id in task_ids:
        client.wait(task_id)
    logs = {task_id: _event_log(client, task_id) for task_id in task_ids}
    return {
        "streams": STREAMS,
        "long_polls": LONG_POLLS,
        "sessions": SESSIONS,
        "timing": asdict(timing),
        "server_settings": {
            name: getattr(server.settings, name, None) for name in ("threads", "max_streams")
        },
        "open_s": open_s,
        "server_threads_while_open": threads,
        "reads_s": window[1] - window[0],
        "baseline_reads": {**summary(baseline), "errors": baseline_errors},
        "reads_with_watchers": {**summary(loaded), "errors": loaded_errors},
        **_tally(outcomes, logs, window),
    }
