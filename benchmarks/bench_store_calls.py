"""CPU per ``Store`` call on the hot paths (not part of the test suite).

The session actor makes a handful of store calls per task and the HTTP read
path one per request, so what each costs in CPU (``time.process_time``: the
Python and driver work, not the fsync wait) is aicli's per-task overhead. Each
call is timed alone, in rounds that walk one task through its life, after a
preload that gives ``list_tasks`` full pages.

    .venv/bin/python -m benchmarks.bench_store_calls                     # SQLite in a temp dir
    .venv/bin/python -m benchmarks.bench_store_calls --database-url postgresql://postgres@127.0.0.1/test

A PostgreSQL URL names an admin connection: the benchmark runs in a database
of its own, created there and dropped afterwards (``aicli.testing.postgres``).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aicli.contract import TaskStatus, TaskSubmit
from aicli.storage import Store, open_store
from aicli.testing.postgres import temporary_postgres_database

PRELOAD = 200


def _timed(
    samples: dict[str, list[tuple[float, float]]], name: str, call: Callable[[], Any]
) -> Any:
    cpu, wall = time.process_time(), time.perf_counter()
    result = call()
    samples[name].append((time.process_time() - cpu, time.perf_counter() - wall))
    return result


def run(store: Store, rounds: int) -> dict[str, list[tuple[float, float]]]:
    session = store.create_session(workdir="/tmp", metadata={"team": "bench"})
    # The store runs a session's tasks in order, so the ones left waiting wait elsewhere.
    backlog = store.create_session(workdir="/tmp", metadata={"team": "bench"})
    for number in range(PRELOAD):
        if number % 4 == 0:
            store.create_task(backlog.id, TaskSubmit(command=f"preload {number}"))
            continue
        task, _ = store.create_task(session.id, TaskSubmit(command=f"preload {number}"))
        started = store.start_next_task(session.id)
        assert started is not None and started.id == task.id
        store.finish_task(
            task.id,
            TaskStatus.COMPLETED,
            output="done",
            cost_usd=0.01,
            num_turns=1,
            events=[("result", {"text": "done"})],
        )
    samples: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for number in range(rounds):
        task, _ = _timed(
            samples,
            "create_task",
            lambda n=number: store.create_task(
                session.id, TaskSubmit(command=f"task {n}", metadata={"n": str(n)})
            ),
        )
        _timed(samples, "pending_task_ids", lambda: store.pending_task_ids(session.id))
        started = _timed(samples, "start_next_task", lambda: store.start_next_task(session.id))
        assert started is not None and started.id == task.id
        _timed(samples, "start_next_task (runs)", lambda: store.start_next_task(session.id))
        _timed(
            samples,
            "update_session",
            lambda n=number: store.update_session(session.id, claude_session_id=f"claude-{n}"),
        )
        events = [("assistant", {"text": "Working on it.", "turn": number})]
        _timed(samples, "append_events", lambda t=task, e=events: store.append_events(t.id, e))
        _timed(samples, "list_events", lambda t=task: store.list_events(t.id))
        _timed(
            samples,
            "finish_task",
            lambda t=task: store.finish_task(
                t.id,
                TaskStatus.COMPLETED,
                output="The answer.",
                cost_usd=0.0123,
                num_turns=1,
                duration_ms=900,
                usage={"input_tokens": 1200, "output_tokens": 300},
                events=[("result", {"text": "The answer.", "is_error": False})],
            ),
        )
        _timed(samples, "get_task", lambda t=task: store.get_task(t.id))
        _timed(samples, "get_session", lambda: store.get_session(session.id))
        _timed(samples, "list_tasks(50)", lambda: store.list_tasks(limit=50))
        _timed(samples, "list_sessions(50)", lambda: store.list_sessions(limit=50))

        cancelled, _ = store.create_task(session.id, TaskSubmit(command=f"cancelled {number}"))
        _timed(
            samples,
            "cancel_pending",
            lambda t=cancelled: store.cancel_pending(t.id, "The client cancelled the task."),
        )
    return samples


def report(samples: dict[str, list[tuple[float, float]]]) -> None:
    print(f"{'call':<22}{'cpu ms':>9}{'wall p50 ms':>13}")
    for name, values in samples.items():
        cpu = sum(c for c, _ in values) / len(values) * 1000
        wall = statistics.median(w for _, w in values) * 1000
        print(f"{name:<22}{cpu:>9.3f}{wall:>13.3f}")


@contextlib.contextmanager
def _scratch_database(admin_url: str | None) -> Iterator[str]:
    if admin_url is not None and admin_url.startswith("postgres"):
        with temporary_postgres_database(admin_url) as url:
            yield url
    elif admin_url is not None:
        yield admin_url
    else:
        with tempfile.TemporaryDirectory() as scratch:
            yield f"sqlite:///{Path(scratch) / 'bench.db'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="default: a SQLite file in a temporary directory")
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    with _scratch_database(args.database_url) as url:
        store = open_store(url)
        try:
            report(run(store, args.rounds))
        finally:
            store.close()


if __name__ == "__main__":
    main()
