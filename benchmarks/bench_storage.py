"""List-endpoint latency of the store over a large task table (not part of the test suite).

Loads ``--rows`` tasks (default 1,000,000) spread over ``--sessions`` sessions,
then times ``Store.list_tasks`` / ``Store.list_sessions`` pages from random
positions for every filter shape the HTTP API offers, and fails (exit 1) if any
shape's p99 is over ``--budget-ms`` (default 50 ms).

    .venv/bin/python -m benchmarks.bench_storage                      # SQLite in a temp dir
    .venv/bin/python -m benchmarks.bench_storage --database-url postgresql://postgres@127.0.0.1/bench

The table is bulk-loaded through the DB-API rather than ``create_task`` (a
million single-row transactions would measure the disk, not the queries). An
existing database that already holds enough tasks is reused as is.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aicli.contract import TaskStatus, new_id
from aicli.storage import Store, open_store
from aicli.storage.fields import to_db_time
from aicli.storage.paging import encode_cursor

STATUS_WEIGHTS = {"completed": 85, "failed": 8, "cancelled": 5, "pending": 1.5, "running": 0.5}
BATCH = 10_000
TASK_COLUMNS = (
    "id",
    "session_id",
    "command",
    "status",
    "output",
    "created_at",
    "started_at",
    "completed_at",
    "updated_at",
    "cost_usd",
    "usage",
    "metadata",
    "seq",
)


def _task_rows(count: int, session_ids: list[str], start: datetime) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(7)
    statuses = list(STATUS_WEIGHTS)
    weights = list(STATUS_WEIGHTS.values())
    usage = json.dumps({"input_tokens": 1200, "output_tokens": 300})
    step = timedelta(days=30) / count
    # Each session's place numbers, handed out in creation order as the store does.
    last_seq = dict.fromkeys(session_ids, 0)
    for number in range(count):
        created = start + step * number
        status = rng.choices(statuses, weights)[0]
        session_id = rng.choice(session_ids)
        last_seq[session_id] += 1
        began = None if status == "pending" else created + timedelta(seconds=1)
        ended = created + timedelta(seconds=20) if status in ("completed", "failed") else None
        yield (
            new_id(),
            session_id,
            f"Summarise change #{number} in two sentences.",
            status,
            "Done." if status == "completed" else None,
            to_db_time(created),
            None if began is None else to_db_time(began),
            None if ended is None else to_db_time(ended),
            to_db_time(ended or began or created),
            0.0123 if ended else None,
            usage if ended else None,
            "{}",
            last_seq[session_id],
        )


def load(store: Store, rows: int, sessions: int) -> None:
    engine = store.engine  # a benchmark may reach inside: it loads rows in bulk
    session_ids = [store.create_session(workdir="/tmp").id for _ in range(sessions)]
    start = datetime.now(UTC) - timedelta(days=31)
    columns = ", ".join(TASK_COLUMNS)
    generated = _task_rows(rows, session_ids, start)
    loaded = 0
    began = time.perf_counter()
    while loaded < rows:
        batch = [row for _, row in zip(range(BATCH), generated, strict=False)]

        def insert(batch: list[tuple[Any, ...]] = batch) -> None:
            cursor = engine.db.cursor()
            if engine.is_postgres:
                from psycopg2.extras import execute_values

                execute_values(cursor, f"INSERT INTO tasks ({columns}) VALUES %s", batch)
            else:
                marks = ", ".join("?" * len(TASK_COLUMNS))
                cursor.executemany(f"INSERT INTO tasks ({columns}) VALUES ({marks})", batch)

        engine.write(insert)
        loaded += len(batch)
        if loaded % 100_000 == 0:
            print(f"  loaded {loaded:,} tasks ({time.perf_counter() - began:.0f}s)", flush=True)
    # The store keeps per-session counters as it goes; a bulk load sets them once.
    counts = ", ".join(
        f"n_{status} = (SELECT COUNT(*) FROM tasks"
        f" WHERE tasks.session_id = sessions.id AND tasks.status = '{status}')"
        for status in tuple(TaskStatus)
    )
    cost = "(SELECT SUM(cost_usd) FROM tasks WHERE tasks.session_id = sessions.id)"
    last_seq = "(SELECT MAX(seq) FROM tasks WHERE tasks.session_id = sessions.id)"
    engine.write(
        lambda: engine.db.execute_sql(
            f"UPDATE sessions SET {counts}, total_cost_usd = COALESCE({cost}, 0),"
            f" last_seq = COALESCE({last_seq}, 0)"
        )
    )
    if engine.is_postgres:
        # Autovacuum would get there; a benchmark should not wait for it.
        engine.read(lambda: engine.db.execute_sql("ANALYZE"))


def _positions(store: Store, samples: int) -> list[tuple[datetime, str, str]]:
    """Rows at random times: where a client holding a cursor might be."""
    engine = store.engine
    p = "%s" if engine.is_postgres else "?"
    first_sql = "SELECT created_at, id, session_id FROM tasks ORDER BY created_at, id LIMIT 1"
    sql = (
        f"SELECT created_at, id, session_id FROM tasks WHERE created_at >= {p}"
        " ORDER BY created_at, id LIMIT 1"
    )

    def as_time(value: str | datetime) -> datetime:
        value = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)

    first = as_time(engine.read(lambda: engine.db.execute_sql(first_sql).fetchone())[0])
    span = timedelta(days=30)
    rng = random.Random(11)
    found = []
    for _ in range(samples):
        when = to_db_time(first + span * rng.random())
        row = engine.read(lambda when=when: engine.db.execute_sql(sql, (when,)).fetchone())
        if row is not None:
            found.append((as_time(row[0]), row[1], row[2]))
    return found


def _time(call: Callable[[], Any], repeats: int) -> list[float]:
    latencies = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - began) * 1000)
    return latencies


def run(store: Store, samples: int, budget_ms: float) -> bool:
    positions = _positions(store, samples)
    rng = random.Random(5)

    def pick() -> tuple[str, str, datetime]:
        created, row_id, session_id = rng.choice(positions)
        return encode_cursor(created, row_id), session_id, created

    def scenario(**fixed: Any) -> Callable[[], Any]:
        def call() -> Any:
            cursor, session_id, created = pick()
            args = dict(fixed)
            if args.pop("cursor", True):
                args["cursor"] = cursor
            if args.pop("in_session", False):
                args["session_id"] = session_id
            if args.pop("window", False):
                args["created_after"] = created - timedelta(days=3)
                args["created_before"] = created + timedelta(days=3)
            return store.list_tasks(**args)

        return call

    scenarios = {
        "tasks, first page": scenario(cursor=False),
        "tasks desc": scenario(),
        "tasks asc": scenario(order="asc"),
        "tasks desc, limit 200": scenario(limit=200),
        "session": scenario(in_session=True),
        "session, first page asc": scenario(in_session=True, cursor=False, order="asc"),
        "status=completed": scenario(status=["completed"]),
        "status=pending": scenario(status=["pending"]),
        "status=pending,running": scenario(status=["pending", "running"]),
        "status=completed,failed": scenario(status=["completed", "failed"]),
        "status=failed,cancelled, first page": scenario(
            status=["failed", "cancelled"], cursor=False
        ),
        "session + status=completed": scenario(in_session=True, status=["completed"]),
        "session + status=pending,running": scenario(
            in_session=True, status=["pending", "running"]
        ),
        "created window": scenario(window=True),
        "created window + status=failed": scenario(window=True, status=["failed"]),
        "sessions": lambda: store.list_sessions(),
        "sessions, status=idle": lambda: store.list_sessions(status=["idle"]),
        "pending_task_ids()": lambda: store.pending_task_ids(pick()[1]),
        "has_pending()": lambda: store.has_pending(pick()[1]),
        "get_session()": lambda: store.get_session(pick()[1]),
    }
    ok = True
    print(f"{'query':40} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}  (ms, {samples} calls)")
    for name, call in scenarios.items():
        call()
        latencies = sorted(_time(call, samples))
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        p95 = latencies[int(len(latencies) * 0.95)]
        flag = "" if p99 < budget_ms else "  OVER BUDGET"
        ok &= p99 < budget_ms
        print(
            f"{name:40} {statistics.median(latencies):7.2f} {p95:7.2f} {p99:7.2f}"
            f" {latencies[-1]:7.2f}{flag}"
        )
    walk_started = time.perf_counter()
    cursor = None
    for _ in range(200):
        page = store.list_tasks(limit=50, cursor=cursor)
        cursor = page.next_cursor
    per_page = (time.perf_counter() - walk_started) * 1000 / 200
    print(f"{'walk 200 consecutive pages':40} {per_page:7.2f} ms/page")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="default: SQLite in a temporary directory")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=1_000)
    parser.add_argument("--samples", type=int, default=300, help="timed calls per query")
    parser.add_argument("--budget-ms", type=float, default=50.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database_url or f"sqlite:///{Path(scratch) / 'bench.db'}"
        store = open_store(url)
        try:
            have = sum(store.task_status_counts().values())
            if have < args.rows:
                print(f"loading {args.rows - have:,} tasks into {store.database_url} ...")
                began = time.perf_counter()
                load(store, args.rows - have, args.sessions)
                print(f"loaded in {time.perf_counter() - began:.0f}s")
            ok = run(store, args.samples, args.budget_ms)
        finally:
            store.close()
    print("p99 within budget" if ok else f"p99 over {args.budget_ms} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
