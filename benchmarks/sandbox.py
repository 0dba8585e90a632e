"""The sandbox's cost, side by side in one run: the same server with ``--sandbox on`` and off.

Cold start is what a new session's first task waits for (the CLI, and with the
sandbox srt, bubblewrap and the proxy bridges, start before the prompt is
answered); a warm task runs in a session whose process is already up, so it
shows the per-task overhead. RSS is each live session's whole process tree:
with the sandbox, srt's Node process and its socat bridges come on top of the CLI.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import psutil

from benchmarks.fake import FakeApi
from benchmarks.memory import MB, _tree_rss
from benchmarks.server import AicliServer
from benchmarks.stats import summary

MODES = ("off", "on")


def _side(fake: FakeApi, mode: str, sessions: int) -> dict[str, Any]:
    with AicliServer(fake, settings={"AICLI_SANDBOX": mode}) as server:
        aicli = psutil.Process(server.pid)
        client = server.client()
        warm_id = client.open_session()["id"]  # imports and caches warmed, as in a live server
        client.run(warm_id, "warm up [[say: ok]]")
        client.close_session(warm_id)
        cold, warm = [], []
        for _ in range(sessions):
            session_id = client.open_session()["id"]
            started = time.perf_counter()
            client.run(session_id, "first [[say: ok]]")
            cold.append(time.perf_counter() - started)
            for n in range(3):
                started = time.perf_counter()
                client.run(session_id, f"again {n} [[say: ok]]")
                warm.append(time.perf_counter() - started)
        trees = []
        for child in aicli.children():
            with contextlib.suppress(psutil.NoSuchProcess):
                trees.append(_tree_rss(child))
    return {
        "cold_start": summary(cold),
        "warm_task": summary(warm),
        "live_processes": len(trees),
        "rss_per_session_mb": sum(trees) / len(trees) / MB if trees else None,
    }


def measure(fake: FakeApi, quick: bool) -> dict[str, Any]:
    sessions = 3 if quick else 10
    return {mode: _side(fake, mode, sessions) for mode in MODES}
