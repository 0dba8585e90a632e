"""Per-task latency on one warm session: aicli vs the SDK client vs a CLI spawned per task.

The three run interleaved, one task each per round, so that the load other
people put on the machine falls on all three alike instead of on whichever
happened to run during a test suite.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psutil

from benchmarks.claude import sdk_client, sdk_task, spawn_task
from benchmarks.fake import FakeApi
from benchmarks.server import AicliServer, Client, ServerUnavailable
from benchmarks.stats import summary

# Where an aicli task's time goes: the POST round trip, created_at to started_at
# (queue and dispatch), started_at to completed_at (the Claude turn, as the SDK
# sees it plus aicli's reading and storing), completed_at to the long-poll's answer.
PHASES = ("submit", "dispatch", "turn", "notify")


class _Aicli:
    """Submit, then long-poll; keeps where each task's time went, from the task's own stamps."""

    def __init__(self, client: Client, server: psutil.Process) -> None:
        self.client = client
        self.server = server
        self.session_id = client.open_session()["id"]
        self.phases: dict[str, list[float]] = {name: [] for name in PHASES}
        self.cpu: list[float] = []

    def __call__(self, prompt: str) -> None:
        cpu = _cpu(self.server)
        started = time.perf_counter()
        task_id = self.client.submit(self.session_id, prompt)["id"]
        submitted = time.perf_counter()
        task = self.client.wait(task_id)
        arrived = time.time()
        created, running, completed = (
            _stamp(task[key]) for key in ("created_at", "started_at", "completed_at")
        )
        for name, seconds in zip(
            PHASES,
            (submitted - started, running - created, completed - running, arrived - completed),
            strict=True,
        ):
            self.phases[name].append(seconds)
        self.cpu.append(_cpu(self.server) - cpu)


def _cpu(process: psutil.Process) -> float:
    """The process's own CPU seconds, its Claude children not included (10 ms ticks)."""
    times = process.cpu_times()
    return times.user + times.system


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class _Spawner:
    """``claude -p`` per task; the first call creates the conversation the others resume."""

    def __init__(self, fake: FakeApi) -> None:
        self.env = fake.cli_env(fake.new_home())
        self.workdir = fake.new_workdir()
        self.conversation: str | None = None

    def __call__(self, prompt: str) -> None:
        self.conversation = spawn_task(self.env, self.workdir, prompt, self.conversation)[
            "session_id"
        ]


async def _rounds(
    fake: FakeApi, runners: dict[str, Callable[[str], Any]], tasks: int, warmup: int
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in ("sdk", *runners)}
    samples["sdk_cpu"] = []
    async with sdk_client(fake, fake.new_workdir()) as sdk:
        for index in range(warmup + tasks):
            prompt = f"task {index} [[say: ok]]"
            took = {}
            started, cpu = time.perf_counter(), time.process_time()
            await sdk_task(sdk, prompt)
            took["sdk"] = time.perf_counter() - started
            took["sdk_cpu"] = time.process_time() - cpu
            for name, run in runners.items():
                started = time.perf_counter()
                run(prompt)
                took[name] = time.perf_counter() - started
            if index >= warmup:
                for name, seconds in took.items():
                    samples[name].append(seconds)
    return samples


def measure(fake: FakeApi, quick: bool) -> dict[str, Any]:
    """Samples and percentiles per approach; aicli is left out if its server is not there."""
    tasks, warmup = (15, 3) if quick else (50, 5)
    result: dict[str, Any] = {"tasks": tasks, "warmup": warmup, "prompt": "[[say: ok]]"}
    try:
        with AicliServer(fake) as server:
            aicli = _Aicli(server.client(), psutil.Process(server.pid))
            samples = asyncio.run(
                _rounds(fake, {"aicli": aicli, "spawn": _Spawner(fake)}, tasks, warmup)
            )
            result["aicli_phases"] = {
                name: summary(values[warmup:]) for name, values in aicli.phases.items()
            }
            result["aicli_server_cpu_ms_per_task"] = sum(aicli.cpu[warmup:]) / tasks * 1000
    except ServerUnavailable as exc:
        result["aicli_skipped"] = str(exc)
        samples = asyncio.run(_rounds(fake, {"spawn": _Spawner(fake)}, tasks, warmup))
    result["sdk_client_cpu_ms_per_task"] = sum(samples.pop("sdk_cpu")) / tasks * 1000
    for name, values in samples.items():
        result[name] = {**summary(values), "samples_s": values}
    if "aicli" in samples:
        result["ratio_aicli_over_sdk_p50"] = result["aicli"]["p50_ms"] / result["sdk"]["p50_ms"]
        result["ratio_spawn_over_aicli_p50"] = result["spawn"]["p50_ms"] / result["aicli"]["p50_ms"]
    result["ratio_spawn_over_sdk_p50"] = result["spawn"]["p50_ms"] / result["sdk"]["p50_ms"]
    return result
