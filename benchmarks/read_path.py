"""The read path: GET /tasks/{id}, task pages and /healthz beside a bare Falcon app; 1M tasks.

Reads are what dashboards and pollers hammer; they must not cost much more than
the web stack itself, nor grow with the size of the table. The anchor is a bare
Falcon app on plain Waitress serving the bytes aicli answered (``bare_falcon.py``);
``wrk`` drives each side from a process of its own.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aicli.contract import new_id
from aicli.storage.fields import to_db_time
from benchmarks.fake import FakeApi
from benchmarks.load import hammer
from benchmarks.options import Options
from benchmarks.server import AicliServer, Client, free_port
from benchmarks.stats import summary

BIG_TASKS = 1_000_000
BIG_SESSIONS = 100
FAILED_EVERY = 1000
PER_QUERY_REQUESTS = 100
PER_QUERY_SECONDS = 10.0


# The anchor serves the bytes on plain Waitress; the others show what the anchor's own
# choices are worth: encoding the body on every request, aicli's Waitress wrapper.
BARE_SIDES = {"bare": [], "bare_media": ["--media"], "bare_wrapped": ["--aicli-wrapper"]}
# Sandbox off: reads never touch a session's CLI, and the servers are alike but for the code.
SERVER_SETTINGS = {"AICLI_SANDBOX": "off"}
FILLER_TASKS = 60


@contextmanager
def _bare_falcon(payloads: dict[str, Any], threads: int, flags: list[str]) -> Iterator[str]:
    """The bare app with as many Waitress threads as the aicli server beside it."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump(payloads, file)
        file.flush()
        port = free_port()
        argv = [sys.executable, "-m", "benchmarks.bare_falcon", str(port)]
        process = subprocess.Popen([*argv, str(threads), file.name, *flags])
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError("the bare Falcon app did not start") from None
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=10)


SHOWN = {
    "task": "/tasks/{id}",
    "session_list": f"/tasks?session_id=…&limit=50 ({FILLER_TASKS} tasks in the session)",
    "list": "/tasks?limit=50",
    "healthz": "/healthz",
}


def _seeded(server: AicliServer) -> dict[str, str]:
    """60 finished tasks in one session; the request target of each read row on this server."""
    client = server.client()
    session_id = client.open_session()["id"]
    tasks = [client.submit(session_id, f"filler {i} [[say: ok]]") for i in range(FILLER_TASKS)]
    client.wait(tasks[-1]["id"])
    return {
        "task": f"/tasks/{tasks[0]['id']}",
        "session_list": f"/tasks?session_id={session_id}&limit=50",
        "list": "/tasks?limit=50",
        "healthz": "/healthz",
    }


def _answers(server: AicliServer, targets: dict[str, str]) -> dict[str, Any]:
    http = server.client().http
    answers = {}
    for target in targets.values():
        response = http.get(f"{server.url}{target}", timeout=30)
        answers[target] = {"status": response.status_code, "body": response.json()}
    return answers


def _against_bare(fake: FakeApi, seconds: float, ref: str | None) -> dict[str, Any]:
    """Every side once per row, in an order that rotates from row to row.

    Each side is a process of its own (aicli as ``aicli serve``, the bare app,
    ``wrk``), the bare app with as many Waitress threads as aicli; ``run.py``
    repeats this and reports the median.
    """
    with ExitStack() as stack:
        ours = stack.enter_context(AicliServer(fake, SERVER_SETTINGS))
        urls = {"aicli": ours.url}
        targets = {"aicli": _seeded(ours)}
        if ref is not None:
            theirs = stack.enter_context(AicliServer(fake, SERVER_SETTINGS, executable=ref))
            urls["ref"], targets["ref"] = theirs.url, _seeded(theirs)
        payloads = _answers(ours, targets["aicli"])
        threads = ours.settings.threads
        for side, flags in BARE_SIDES.items():
            urls[side] = stack.enter_context(_bare_falcon(payloads, threads, flags))
            targets[side] = targets["aicli"]
        result: dict[str, Any] = {"threads": threads, "seconds": seconds}
        sides = list(urls)
        for index, name in enumerate(SHOWN):
            entry: dict[str, Any] = {"path": SHOWN[name]}
            for side in sides[index % len(sides) :] + sides[: index % len(sides)]:
                entry[side] = hammer(f"{urls[side]}{targets[side][name]}", seconds)
            for side in ("aicli", "ref", "bare_media", "bare_wrapped"):
                if side in entry:
                    entry[f"ratio_{side}_over_bare"] = entry[side]["rps"] / entry["bare"]["rps"]
            result[name] = entry
    return result


def _fill(database: Path, rows: int) -> None:
    """Raw SQL bulk insert, cloning rows aicli itself wrote so the format is exactly its own."""
    con = sqlite3.connect(database)
    con.row_factory = sqlite3.Row
    # Filler needs no durability; a big page cache keeps the five task indexes in memory.
    con.execute("PRAGMA synchronous = OFF")
    con.execute("PRAGMA cache_size = -262144")
    task = dict(con.execute("SELECT * FROM tasks WHERE status = 'completed' LIMIT 1").fetchone())
    session = dict(
        con.execute("SELECT * FROM sessions WHERE id = ?", (task["session_id"],)).fetchone()
    )
    session_ids = [new_id() for _ in range(BIG_SESSIONS)]
    columns = ", ".join(session)
    marks = ", ".join("?" for _ in session)
    with con:
        con.executemany(
            f"INSERT INTO sessions ({columns}) VALUES ({marks})",
            [tuple({**session, "id": sid}.values()) for sid in session_ids],
        )
    start = datetime.now(UTC) - timedelta(milliseconds=rows)
    columns = ", ".join(task)
    marks = ", ".join("?" for _ in task)

    def clones() -> Iterator[tuple[Any, ...]]:
        for index in range(rows):
            stamp = to_db_time(start + timedelta(milliseconds=index))
            failed = index % FAILED_EVERY == 0
            yield tuple(
                {
                    **task,
                    "id": new_id(),
                    "session_id": session_ids[index % BIG_SESSIONS],
                    # Each session's queue numbers its tasks: a place of their own.
                    "seq": 1_000 + index // BIG_SESSIONS,
                    "command": f"filler {index}",
                    "status": "failed" if failed else "completed",
                    "output": None if failed else task["output"],
                    "error": "Filler failure." if failed else None,
                    "created_at": stamp,
                    "started_at": stamp,
                    "completed_at": stamp,
                    "updated_at": stamp,
                }.values()
            )

    with con:
        con.executemany(f"INSERT INTO tasks ({columns}) VALUES ({marks})", clones())
    con.close()


def _query_time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _timed_gets(client: Client, next_path: Callable[[Any], str]) -> dict[str, Any]:
    """Sequential GETs; ``next_path`` picks each path from the previous body (None at first)."""
    samples = []
    body = None
    deadline = time.monotonic() + PER_QUERY_SECONDS
    while len(samples) < PER_QUERY_REQUESTS and time.monotonic() < deadline:
        path = next_path(body)
        started = time.perf_counter()
        response = client.http.get(f"{client.url}{path}", timeout=60)
        samples.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:300]}")
        body = response.json()
    return summary(samples)


def _cursor_walk(body: Any) -> str:
    """Page after page from the newest, as a client exporting everything would."""
    if body is None:
        return "/tasks?limit=50"
    return f"/tasks?limit=50&cursor={body['next_cursor']}"


def _over_big_table(fake: FakeApi) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aicli-bench-big-") as tmp:
        database = Path(tmp) / "big.db"
        with AicliServer(fake, database=database) as server:
            client = server.client()
            client.run(client.open_session()["id"], "template [[say: ok]]")
        started = time.perf_counter()
        _fill(database, BIG_TASKS)
        fill_s = time.perf_counter() - started
        with AicliServer(fake, database=database) as server:
            client = server.client()
            session_id = client.http.get(f"{server.url}/sessions?limit=1").json()["data"][0]["id"]
            middle = datetime.now(UTC) - timedelta(milliseconds=BIG_TASKS // 2)
            window = (
                f"created_after={_query_time(middle)}"
                f"&created_before={_query_time(middle + timedelta(seconds=5))}"
            )
            queries = {
                "newest page": "/tasks?limit=50",
                "oldest page": "/tasks?limit=50&order=asc",
                "one session": f"/tasks?session_id={session_id}&limit=50",
                "rare status (0.1%)": "/tasks?status=failed&limit=50",
                "session + status": f"/sessions/{session_id}/tasks?status=failed&limit=50",
                "time window": f"/tasks?{window}&limit=50",
                "one session object": f"/sessions/{session_id}",
                "session list": "/sessions?limit=50",
            }
            result: dict[str, Any] = {"tasks": BIG_TASKS, "sessions": BIG_SESSIONS}
            result["fill_s"] = fill_s
            result["queries"] = {
                name: {"path": path, **_timed_gets(client, lambda _, path=path: path)}
                for name, path in queries.items()
            }
            result["queries"]["cursor walk"] = {
                "path": "/tasks?limit=50&cursor=...",
                **_timed_gets(client, _cursor_walk),
            }
    return result


def measure(fake: FakeApi, options: Options) -> dict[str, Any]:
    result = _against_bare(fake, 2 if options.quick else 4, options.ref)
    if options.quick:
        result["big_table_skipped"] = "--quick: the 1,000,000-task table takes a minute to fill"
    elif options.first_run:
        result["big_table"] = _over_big_table(fake)
    return result
