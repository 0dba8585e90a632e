"""The sandbox's cost: the same server with its sessions inside srt and without, side by side.

Two ``aicli serve`` run at once, started alike but for ``AICLI_SANDBOX`` (each
with a fresh database and ``AICLI_STATE_DIR``), and take turns, one sample each
per round in an order that alternates, so that the load others put on the
machine falls on both alike: a difference between them is the sandbox's, not
the hour's. Three costs, as issue #26 asks: a session's cold start, the
per-task overhead of a warm session, and the memory and processes a live
session holds.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from typing import Any, TypeVar

import psutil

from aicli.actors.claude_bin import find_claude
from benchmarks.fake import FakeApi
from benchmarks.server import AicliServer, Client
from benchmarks.stats import summary

SIDES = ("on", "off")
CLOSE_DEADLINE_S = 30.0
T = TypeVar("T")
PROMPT = "[[say: ok]]"
WAIT_S = 30
MB = 1024 * 1024


def _finish(client: Client, session_id: str, command: str) -> None:
    """One task to its end: ``Prefer: wait`` (one request), long-polling on a 202."""
    task, applied = client.submit_waiting(session_id, command, WAIT_S)
    if not applied:
        task = client.wait(task["id"])
    if task["status"] != "completed":
        raise RuntimeError(f"task {task['id']} ended {task['status']}: {task.get('error')}")


def _alternating(rounds: int) -> Iterator[tuple[int, str]]:
    """(round, side) for every sample: on first in even rounds, off first in odd ones."""
    for index in range(rounds):
        for side in SIDES if index % 2 == 0 else SIDES[::-1]:
            yield index, side


def _gone(server: psutil.Process, deadline_s: float = CLOSE_DEADLINE_S) -> None:
    """Until the server has no child left: a closed session's processes end after the DELETE."""
    deadline = time.monotonic() + deadline_s
    while children := server.children():
        if time.monotonic() > deadline:
            names = ", ".join(sorted(child.name() for child in children))
            raise RuntimeError(f"a closed session's processes outlived {deadline_s:.0f} s: {names}")
        time.sleep(0.01)


def _cold_start(client: Client, server: psutil.Process, index: int) -> tuple[float, float]:
    """From ``POST /sessions`` to its first task done (the session's CLI starts in between),
    and from its ``DELETE`` to its processes gone.

    The next sample waits for those processes to end, so that no cold start
    shares the machine with the previous one's teardown: with the sides
    alternating, the teardown of a sandboxed session would slow the bare
    session's start after it.
    """
    started = time.perf_counter()
    session_id = client.open_session()["id"]
    _finish(client, session_id, f"cold {index} {PROMPT}")
    took = time.perf_counter() - started
    closing = time.perf_counter()
    client.close_session(session_id)
    _gone(server)
    return took, time.perf_counter() - closing


def _cli_names() -> set[str]:
    """What the CLI's process is called: after the link it was started by, or after its file."""
    path = find_claude()
    return {os.path.basename(path), os.path.basename(os.path.realpath(path))}


def _rss_uss(process: psutil.Process) -> tuple[int, int]:
    info = process.memory_full_info()
    return info.rss, info.uss


def _session_tree(root: psutil.Process, cli_names: set[str]) -> dict[str, Any] | None:
    """A live session's process tree, the CLI (with what it started) apart from its wrappers.

    With the sandbox on, srt's node process, bwrap and socat stand between the
    server and the CLI; they are the sandbox's own cost. USS beside RSS: the
    memory that is the process's alone (summed RSS counts pages the tree's
    processes share with each other and with other sessions' CLIs, the CLI's
    binary above all). None for a child of the server that runs no CLI.
    """
    members = [root, *root.children(recursive=True)]
    cli: set[int] = set()
    for member in members:
        with suppress(psutil.NoSuchProcess):
            if member.pid not in cli and member.name() in cli_names:
                cli |= {member.pid, *(child.pid for child in member.children(recursive=True))}
    if not cli:
        return None
    tree: dict[str, Any] = {
        "processes": Counter(),
        "cli_rss": 0,
        "cli_uss": 0,
        "wrapper_rss": 0,
        "wrapper_uss": 0,
    }
    for member in members:
        with suppress(psutil.NoSuchProcess):
            rss, uss = _rss_uss(member)
            part = "cli" if member.pid in cli else "wrapper"
            tree[f"{part}_rss"] += rss
            tree[f"{part}_uss"] += uss
            tree["processes"][member.name()] += 1
    return tree


def _live_trees(server: psutil.Process, cli_names: set[str]) -> dict[str, Any]:
    """Every live session's tree under the server, averaged; and what else the server runs."""
    trees, others = [], []
    for child in server.children():
        with suppress(psutil.NoSuchProcess):
            tree = _session_tree(child, cli_names)
            if tree is None:
                others.append(child.name())
            else:
                trees.append(tree)
    result: dict[str, Any] = {"live_sessions": len(trees), "other_server_children": others}
    if not trees:
        return result
    for key in ("cli_rss", "cli_uss", "wrapper_rss", "wrapper_uss"):
        result[f"{key}_mb"] = sum(tree[key] for tree in trees) / len(trees) / MB
    for kind in ("rss", "uss"):
        result[f"{kind}_mb"] = result[f"cli_{kind}_mb"] + result[f"wrapper_{kind}_mb"]
    result["tree_rss_max_mb"] = max(tree["cli_rss"] + tree["wrapper_rss"] for tree in trees) / MB
    # Trees are alike; the most common one is what a session holds (the others are in the JSON).
    shapes = Counter(tuple(sorted(tree["processes"].items())) for tree in trees)
    result["processes_by_name"] = dict(shapes.most_common(1)[0][0])
    result["processes"] = sum(result["processes_by_name"].values())
    result["tree_shapes"] = [
        {"processes_by_name": dict(shape), "sessions": count} for shape, count in shapes.items()
    ]
    return result


def _rounds(rounds: int, sample: Callable[[str, int], T], warmup: int = 0) -> dict[str, list[T]]:
    """``sample(side, round)`` for both sides per round, the order alternating; warm-ups dropped."""
    samples: dict[str, list[T]] = {side: [] for side in SIDES}
    for index, side in _alternating(warmup + rounds):
        took = sample(side, index)
        if index >= warmup:
            samples[side].append(took)
    return samples


def _timed(samples: list[float]) -> dict[str, Any]:
    return {**summary(samples), "samples_s": samples}


def measure(fake: FakeApi, quick: bool) -> dict[str, Any]:
    # As many tasks as ``latency`` times, so that the two ratios are as noisy as each other.
    cold, tasks, warmup, live = (5, 30, 3, 3) if quick else (15, 100, 5, 4)
    result: dict[str, Any] = {
        "cold_starts": cold,
        "tasks": tasks,
        "warmup": warmup,
        "prompt": PROMPT,
    }
    cli_names = _cli_names()
    with ExitStack() as stack:
        # Each keeps its database and AICLI_STATE_DIR in a scratch directory of its own.
        servers = {
            side: stack.enter_context(AicliServer(fake, settings={"AICLI_SANDBOX": side}))
            for side in SIDES
        }
        clients = {side: server.client() for side, server in servers.items()}
        processes = {side: psutil.Process(server.pid) for side, server in servers.items()}

        cold_samples = _rounds(
            cold, lambda side, index: _cold_start(clients[side], processes[side], index)
        )

        warm = {side: client.open_session()["id"] for side, client in clients.items()}

        def task(side: str, index: int) -> float:
            started = time.perf_counter()
            _finish(clients[side], warm[side], f"task {index} {PROMPT}")
            return time.perf_counter() - started

        task_samples = _rounds(tasks, task, warmup)

        # The warm session is live already; more sessions, each after one task, make ``live``.
        for client in clients.values():
            for index in range(live - 1):
                _finish(client, client.open_session()["id"], f"live {index} {PROMPT}")
        time.sleep(1.0)  # let the CLIs settle after their turn, as the memory benchmark does
        trees = {side: _live_trees(process, cli_names) for side, process in processes.items()}

    for side in SIDES:
        result[side] = {
            "cold_start": _timed([took for took, _ in cold_samples[side]]),
            "close": _timed([closed for _, closed in cold_samples[side]]),
            "task": _timed(task_samples[side]),
            "live": trees[side],
        }
    on, off = result["on"], result["off"]
    # A server without the setting runs both sides bare: then there is nothing to compare.
    result["sandbox_in_effect"] = on["live"].get("processes", 0) > off["live"].get("processes", 0)
    result["ratio_task_p50"] = on["task"]["p50_ms"] / off["task"]["p50_ms"]
    result["ratio_cold_start_p50"] = on["cold_start"]["p50_ms"] / off["cold_start"]["p50_ms"]
    return result
