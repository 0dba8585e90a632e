"""Memory: aicli's own RSS with 1,000 open sessions, and RSS per live Claude process.

Sessions are cheap only if an idle one holds no process: here at most
``LIVE`` processes stay alive and the rest are passivated (stopped, resumable).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import psutil

from benchmarks.fake import FakeApi
from benchmarks.server import AicliServer

LIVE = 4
# The goal is about 1,000 idle sessions, so --quick opens as many (it takes seconds).
SESSIONS = 1000
MB = 1024 * 1024


def _tree_rss(process: psutil.Process) -> int:
    """RSS of a process and everything it started (the CLI may run helpers)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def measure(fake: FakeApi, quick: bool) -> dict[str, Any]:
    sessions = SESSIONS
    settings = {"AICLI_MAX_LIVE_PROCESSES": str(LIVE)}
    with AicliServer(fake, settings=settings) as server:
        aicli = psutil.Process(server.pid)
        client = server.client()
        # A first task loads what aicli imports lazily; closing it leaves no process.
        warm_id = client.open_session()["id"]
        client.run(warm_id, "warm up [[say: ok]]")
        client.close_session(warm_id)
        idle_rss = aicli.memory_info().rss
        session_ids = [client.open_session()["id"] for _ in range(sessions)]
        # Twice as many sessions run a task as may stay live: the first half is passivated.
        for session_id in session_ids[: 2 * LIVE]:
            client.run(session_id, "remember me [[say: ok]]")
        time.sleep(1.0)
        loaded_rss = aicli.memory_info().rss
        trees = [_tree_rss(child) for child in aicli.children()]
        passivated = sum(
            1
            for session_id in session_ids[:LIVE]
            if not client.get_session(session_id)["process_alive"]
        )
    return {
        "sessions": sessions,
        "aicli_rss_idle_mb": idle_rss / MB,
        "aicli_rss_with_sessions_mb": loaded_rss / MB,
        "per_session_kb": (loaded_rss - idle_rss) / sessions / 1024,
        "live_processes": len(trees),
        "passivated_checked": passivated,
        "claude_rss_mean_mb": sum(trees) / len(trees) / MB if trees else None,
        "claude_rss_max_mb": max(trees) / MB if trees else None,
    }
