"""Per-task latency on one warm session: aicli (two ways) vs the SDK client vs a CLI per task.

The four run interleaved, one task each per round and in a rotating order, so
that the load other people put on the machine falls on all of them alike
instead of on whichever happened to run during a test suite, and none of them
always runs right after the heavy ``claude -p`` spawn.

aicli is driven the two ways a client can wait for a task: ``POST`` then
``GET /tasks/{id}?wait=30`` (two requests), and ``POST`` with ``Prefer: wait=30``
(one request, answered 200 with the finished task by a server that honours it;
a 202 falls back to the long-poll, and the results count how often that happened).
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
# sees it plus aicli's reading and storing), completed_at to the answer at the client.
PHASES = ("submit", "dispatch", "turn", "notify")
# The Prefer variant's POST is the whole task, so it has no submit phase of its own.
PREFER_PHASES = PHASES[1:]
WAIT_S = 30


def _cpu(process: psutil.Process) -> float:
    """The process's own CPU seconds (user + sys from /proc/<pid>/stat, 10 ms ticks).

    Its Claude children are not included: their CPU is Claude's, which the SDK
    client spends as well.
    """
    times = process.cpu_times()
    return times.user + times.system


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class _AicliRunner:
    """One aicli session; keeps where each task's time went and the server's CPU per call.

    The calls of the two aicli variants interleave with each other and with the
    SDK's, so CPU is read around each call and the deltas are summed: a delta
    is in 10 ms ticks, but over many calls the sum is the server's CPU during
    exactly these calls. What the server does after answering (storing the
    last events, say) lands in whichever call comes next, so the split between
    the variants is approximate; ``_rounds`` measures the total.
    """

    phase_names: tuple[str, ...] = PHASES

    def __init__(self, client: Client, server: psutil.Process) -> None:
        self.client = client
        self.server = server
        self.session_id = client.open_session()["id"]
        self.phases: dict[str, list[float]] = {name: [] for name in self.phase_names}
        self.cpu: list[float] = []

    def __call__(self, prompt: str) -> None:
        cpu = _cpu(self.server)
        self._run(prompt)
        self.cpu.append(_cpu(self.server) - cpu)

    def _run(self, prompt: str) -> None:
        raise NotImplementedError

    def _record(self, task: dict[str, Any], arrived: float, submit_s: float | None) -> None:
        created, running, completed = (
            _stamp(task[key]) for key in ("created_at", "started_at", "completed_at")
        )
        spans = {
            "submit": submit_s,
            "dispatch": running - created,
            "turn": completed - running,
            "notify": arrived - completed,
        }
        for name in self.phase_names:
            self.phases[name].append(spans[name])  # type: ignore[arg-type]


class _AicliLongPoll(_AicliRunner):
    """``POST /sessions/{id}/tasks``, then ``GET /tasks/{id}?wait=30`` until terminal."""

    def _run(self, prompt: str) -> None:
        started = time.perf_counter()
        task_id = self.client.submit(self.session_id, prompt)["id"]
        submitted = time.perf_counter()
        task = self.client.wait(task_id)
        self._record(task, time.time(), submitted - started)


class _AicliPrefer(_AicliRunner):
    """``POST`` with ``Prefer: wait=30``; on a 202, the long-poll as above."""

    phase_names = PREFER_PHASES

    def __init__(self, client: Client, server: psutil.Process) -> None:
        super().__init__(client, server)
        self.applied: list[bool] = []

    def _run(self, prompt: str) -> None:
        task, applied = self.client.submit_waiting(self.session_id, prompt, WAIT_S)
        if not applied:
            task = self.client.wait(task["id"])
        elif task["status"] != "completed":
            raise RuntimeError(f"task {task['id']} ended {task['status']}: {task.get('error')}")
        self.applied.append(applied)
        self._record(task, time.time(), None)


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
    fake: FakeApi,
    runners: dict[str, Callable[[str], Any]],
    tasks: int,
    warmup: int,
    server_cpu: Callable[[], float] = lambda: 0.0,
) -> tuple[dict[str, list[float]], float]:
    """Samples per approach, and ``server_cpu``'s growth over the measured rounds.

    That growth is all the server's CPU while the measured rounds ran, spent
    during its own calls or after them (while the SDK or a spawn ran): with
    nothing else asking it anything, all of it is on behalf of aicli's tasks.
    """
    names = ["sdk", *runners]
    samples: dict[str, list[float]] = {name: [] for name in names}
    samples["sdk_cpu"] = []
    cpu_at_start = 0.0
    async with sdk_client(fake, fake.new_workdir()) as sdk:

        async def run_sdk(prompt: str) -> float:
            cpu = time.process_time()
            await sdk_task(sdk, prompt)
            return time.process_time() - cpu

        for index in range(warmup + tasks):
            if index == warmup:
                cpu_at_start = server_cpu()
            prompt = f"task {index} [[say: ok]]"
            took: dict[str, float] = {}
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                if name == "sdk":
                    took["sdk_cpu"] = await run_sdk(prompt)
                else:
                    runners[name](prompt)
                took[name] = time.perf_counter() - started
            if index >= warmup:
                for name, seconds in took.items():
                    samples[name].append(seconds)
        server_cpu_s = server_cpu() - cpu_at_start
    return samples, server_cpu_s


def _aicli_results(runners: dict[str, _AicliRunner], warmup: int, tasks: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, runner in runners.items():
        result[f"{name}_phases"] = {
            phase: summary(values[warmup:]) for phase, values in runner.phases.items()
        }
        result[f"{name}_server_cpu_ms_per_task"] = sum(runner.cpu[warmup:]) / tasks * 1000
    prefer = runners["aicli_prefer"]
    assert isinstance(prefer, _AicliPrefer)
    result["prefer_answered_by_post"] = sum(prefer.applied[warmup:])
    return result


def measure(fake: FakeApi, quick: bool) -> dict[str, Any]:
    """Samples and percentiles per approach; aicli is left out if its server is not there."""
    tasks, warmup = (30, 3) if quick else (100, 5)
    result: dict[str, Any] = {"tasks": tasks, "warmup": warmup, "prompt": "[[say: ok]]"}
    try:
        with AicliServer(fake) as server:
            process = psutil.Process(server.pid)
            aicli: dict[str, _AicliRunner] = {
                "aicli": _AicliLongPoll(server.client(), process),
                "aicli_prefer": _AicliPrefer(server.client(), process),
            }
            runners = {**aicli, "spawn": _Spawner(fake)}
            samples, server_cpu_s = asyncio.run(
                _rounds(fake, runners, tasks, warmup, lambda: _cpu(process))
            )
            result.update(_aicli_results(aicli, warmup, tasks))
            # Both variants' tasks together: the one number that misses none of the server's CPU.
            result["aicli_server_cpu_ms_per_task_whole_run"] = server_cpu_s / (2 * tasks) * 1000
    except ServerUnavailable as exc:
        result["aicli_skipped"] = str(exc)
        samples, _ = asyncio.run(_rounds(fake, {"spawn": _Spawner(fake)}, tasks, warmup))
    result["sdk_client_cpu_ms_per_task"] = sum(samples.pop("sdk_cpu")) / tasks * 1000
    for name, values in samples.items():
        result[name] = {**summary(values), "samples_s": values}
    sdk_p50 = result["sdk"]["p50_ms"]
    for name in ("aicli", "aicli_prefer"):
        if name in samples:
            result[f"ratio_{name}_over_sdk_p50"] = result[name]["p50_ms"] / sdk_p50
    if "aicli" in samples:
        result["ratio_spawn_over_aicli_p50"] = result["spawn"]["p50_ms"] / result["aicli"]["p50_ms"]
    result["ratio_spawn_over_sdk_p50"] = result["spawn"]["p50_ms"] / sdk_p50
    return result
