"""Per-task latency on one warm session: aicli vs the SDK client (and a CLI per task), interleaved.

The process layout is the held-out measurement's: every aicli server is a
process of its own started as ``aicli serve`` (``server.py``), the client is
this process (its calls timed here, over one keep-alive connection per
server), the fake API a third; the SDK's ``ClaudeSDKClient`` runs here with the
same CLI binary. Each approach runs one task per round, in an order that
rotates every round, so the load others put on the machine falls on all alike.

Each aicli variant has a server of its own, so that a server's CPU over the
measured rounds is exactly its variant's (the variants shared one server
before, whose CPU could only be split between them approximately, and the
goal row then showed the average of both, lighter than POST + GET ?wait alone):

* ``aicli``: ``POST`` then ``GET /tasks/{id}?wait=30``, sandbox off;
* ``aicli_prefer``: ``POST`` with ``Prefer: wait=30`` (a 202 falls back to the
  long-poll, counted), sandbox off;
* ``aicli_sandboxed``: as ``aicli`` with the sandbox on, aicli's default, an
  extra row: the SDK runs its CLI unsandboxed, so only the rows with the
  sandbox off compare like with like;
* ``ref_aicli`` and ``ref_aicli_prefer``: the first two on ``--ref``'s server;
* ``spawn``: ``claude -p`` per task, first run only (not a hot-path row).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime
from typing import Any

import psutil

from benchmarks.claude import sdk_client, sdk_task, spawn_task
from benchmarks.fake import FakeApi
from benchmarks.options import Options
from benchmarks.server import AicliServer, ServerUnavailable
from benchmarks.stats import summary

# Where an aicli task's time goes: the POST round trip, created_at to started_at
# (queue and dispatch), started_at to completed_at (the Claude turn, as the SDK
# sees it plus aicli's reading and storing), completed_at to the answer at the client.
PHASES = ("submit", "dispatch", "turn", "notify")
# The Prefer variant's POST is the whole task, so it has no submit phase of its own.
PREFER_PHASES = PHASES[1:]
WAIT_S = 30
IDLE_S = 5.0


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
    """One aicli session on a server of its own; keeps where each task's time went.

    One server per runner, so that each server's CPU over the measured rounds
    is exactly that of its own variant's tasks (two variants on one server
    could only split it approximately, by reading it around each call).
    """

    phase_names: tuple[str, ...] = PHASES

    def __init__(self, server: AicliServer) -> None:
        self.client = server.client()
        self.server = psutil.Process(server.pid)
        self.session_id = self.client.open_session()["id"]
        self.phases: dict[str, list[float]] = {name: [] for name in self.phase_names}
        self.idle_cpu_per_s = 0.0

    def __call__(self, prompt: str) -> None:
        self._run(prompt)

    def cpu(self) -> float:
        return _cpu(self.server)

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

    def __init__(self, server: AicliServer) -> None:
        super().__init__(server)
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
    cpu_meters: dict[str, Callable[[], float]],
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Samples per approach, and each meter's growth over the measured rounds.

    A meter is one server's CPU: its growth is all that server did while the
    measured rounds ran, during its own calls or after them (while the others
    ran): with nothing else asking it anything, all of it is on behalf of its
    own tasks.
    """
    names = ["sdk", *runners]
    samples: dict[str, list[float]] = {name: [] for name in names}
    samples["sdk_cpu"] = []
    at_start: dict[str, float] = {}
    measured_from = 0.0
    async with sdk_client(fake, fake.new_workdir()) as sdk:

        async def run_sdk(prompt: str) -> float:
            cpu = time.process_time()
            await sdk_task(sdk, prompt)
            return time.process_time() - cpu

        for index in range(warmup + tasks):
            if index == warmup:
                at_start = {name: meter() for name, meter in cpu_meters.items()}
                measured_from = time.perf_counter()
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
        grown = {name: meter() - at_start[name] for name, meter in cpu_meters.items()}
        grown["measured_s"] = time.perf_counter() - measured_from
    return samples, grown


# name: (the runner's class, whose server: ours or --ref's, AICLI_SANDBOX). The hot-path
# rows run with the sandbox off, as the SDK runs the CLI; the sandboxed row is extra.
VARIANTS: dict[str, tuple[type[_AicliRunner], str, str]] = {
    "aicli": (_AicliLongPoll, "ours", "off"),
    "aicli_prefer": (_AicliPrefer, "ours", "off"),
    "aicli_sandboxed": (_AicliLongPoll, "ours", "on"),
    "ref_aicli": (_AicliLongPoll, "ref", "off"),
    "ref_aicli_prefer": (_AicliPrefer, "ref", "off"),
}


def _servers(
    fake: FakeApi, stack: ExitStack, options: Options, result: dict[str, Any]
) -> dict[str, _AicliRunner]:
    """A server per variant; one that cannot start is skipped, with its reason in the result."""
    runners: dict[str, _AicliRunner] = {}
    for name, (runner, whose, sandbox) in VARIANTS.items():
        if whose == "ref" and options.ref is None:
            continue
        executable = options.ref if whose == "ref" else None
        try:
            server = stack.enter_context(
                AicliServer(fake, {"AICLI_SANDBOX": sandbox}, executable=executable)
            )
        except ServerUnavailable as exc:
            if name in ("aicli", "aicli_prefer"):
                raise
            result[f"{name}_skipped"] = str(exc)
            continue
        runners[name] = runner(server)
    return runners


def _idle_rates(runners: dict[str, _AicliRunner]) -> None:
    """Each server's CPU per second with nothing asked of it, all of them idle at once."""
    before = {name: runner.cpu() for name, runner in runners.items()}
    time.sleep(IDLE_S)
    for name, runner in runners.items():
        runner.idle_cpu_per_s = (runner.cpu() - before[name]) / IDLE_S


def _aicli_results(
    runners: dict[str, _AicliRunner], warmup: int, tasks: int, cpu: dict[str, float]
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, runner in runners.items():
        result[f"{name}_phases"] = {
            phase: summary(values[warmup:]) for phase, values in runner.phases.items()
        }
        result[f"{name}_server_cpu_ms_per_task"] = cpu[name] / tasks * 1000
        # What the server spends idle over as long (timers, its poll loop), included above.
        idle = runner.idle_cpu_per_s * cpu["measured_s"]
        result[f"{name}_server_idle_cpu_ms_per_task"] = idle / tasks * 1000
        if isinstance(runner, _AicliPrefer):
            result[f"{name}_answered_by_post"] = sum(runner.applied[warmup:])
    result["prefer_answered_by_post"] = result.get("aicli_prefer_answered_by_post")
    return result


def measure(fake: FakeApi, options: Options) -> dict[str, Any]:
    """Samples and percentiles per approach; aicli is left out if its server is not there.

    ``claude -p`` per task is not a hot-path row: it runs on the first run only.
    """
    tasks, warmup = (30, 3) if options.quick else (100, 5)
    result: dict[str, Any] = {"tasks": tasks, "warmup": warmup, "prompt": "[[say: ok]]"}
    spawn: dict[str, Callable[[str], Any]] = {"spawn": _Spawner(fake)} if options.first_run else {}
    with ExitStack() as stack:
        try:
            aicli = _servers(fake, stack, options, result)
        except ServerUnavailable as exc:
            result["aicli_skipped"] = str(exc)
            aicli = {}
        meters = {name: runner.cpu for name, runner in aicli.items()}
        _idle_rates(aicli)
        samples, cpu = asyncio.run(_rounds(fake, {**aicli, **spawn}, tasks, warmup, meters))
        result.update(_aicli_results(aicli, warmup, tasks, cpu))
    result["sdk_client_cpu_ms_per_task"] = sum(samples.pop("sdk_cpu")) / tasks * 1000
    for name, values in samples.items():
        result[name] = {**summary(values), "samples_s": values}
    sdk_p50 = result["sdk"]["p50_ms"]
    for name in aicli:
        result[f"ratio_{name}_over_sdk_p50"] = result[name]["p50_ms"] / sdk_p50
    if "spawn" in samples:
        result["ratio_spawn_over_sdk_p50"] = result["spawn"]["p50_ms"] / sdk_p50
        if "aicli" in samples:
            ratio = result["spawn"]["p50_ms"] / result["aicli"]["p50_ms"]
            result["ratio_spawn_over_aicli_p50"] = ratio
    return result
