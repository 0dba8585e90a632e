"""Completed tasks per second with N sessions × M tasks submitted at once.

Both sides start timing with every session's Claude process already warm (one
task run first), so the number is the steady state, not N process starts. On
aicli's side the server's own CPU over the timed part, divided by the tasks,
is a second measure of its CPU per task (see ``latency``), this time under load
and with no other approach interleaved.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil

from benchmarks.claude import sdk_client, sdk_task
from benchmarks.fake import FakeApi
from benchmarks.server import AicliServer, ServerUnavailable

SESSION_COUNTS = (1, 4, 16)


def _prompt(session: int, task: int) -> str:
    return f"session {session} task {task} [[say: ok]]"


async def _sdk_rate(fake: FakeApi, sessions: int, tasks: int) -> float:
    """N clients driven from one event loop, as one process embedding the SDK would."""
    clients = [sdk_client(fake, fake.new_workdir()) for _ in range(sessions)]
    await asyncio.gather(*(client.connect() for client in clients))
    try:
        await asyncio.gather(*(sdk_task(client, "warm up [[say: ok]]") for client in clients))

        async def drive(session: int) -> None:
            for task in range(tasks):
                await sdk_task(clients[session], _prompt(session, task))

        started = time.perf_counter()
        await asyncio.gather(*(drive(session) for session in range(sessions)))
        return sessions * tasks / (time.perf_counter() - started)
    finally:
        for client in clients:
            await client.disconnect()


def _aicli_rate(server: AicliServer, sessions: int, tasks: int) -> tuple[float, float]:
    """All tasks submitted at once (a thread per session keeps its order), then long-polled.

    Tasks per second, and the server's own CPU seconds per task (user + sys).
    """
    process = psutil.Process(server.pid)
    clients = [server.client() for _ in range(sessions)]
    session_ids = [client.open_session()["id"] for client in clients]
    with ThreadPoolExecutor(sessions) as pool:
        list(pool.map(lambda c, s: c.run(s, "warm up [[say: ok]]"), clients, session_ids))

        def drive(session: int) -> None:
            client, session_id = clients[session], session_ids[session]
            submitted = [client.submit(session_id, _prompt(session, task)) for task in range(tasks)]
            for task in submitted:
                client.wait(task["id"])

        cpu = process.cpu_times()
        started = time.perf_counter()
        list(pool.map(drive, range(sessions)))
        rate = sessions * tasks / (time.perf_counter() - started)
        after = process.cpu_times()
        cpu_s = (after.user + after.system - cpu.user - cpu.system) / (sessions * tasks)
        list(pool.map(lambda c, s: c.close_session(s), clients, session_ids))
    return rate, cpu_s


def _rows(fake: FakeApi, server: AicliServer | None, total: int, rounds: int) -> dict[str, Any]:
    """aicli, then the SDK, alternating at each N, so drifting load hits both.

    The best round counts: load from elsewhere only ever slows a round down.
    """
    rows: dict[str, Any] = {}
    for sessions in SESSION_COUNTS:
        tasks = total // sessions
        aicli, aicli_cpu, sdk = [], [], []
        for _ in range(rounds):
            if server is not None:
                rate, cpu_s = _aicli_rate(server, sessions, tasks)
                aicli.append(rate)
                aicli_cpu.append(cpu_s)
            sdk.append(asyncio.run(_sdk_rate(fake, sessions, tasks)))
        row: dict[str, Any] = {"tasks_per_session": tasks, "sdk_rounds": sdk, "sdk_tps": max(sdk)}
        if aicli:
            row.update(aicli_rounds=aicli, aicli_tps=max(aicli))
            row["ratio_aicli_over_sdk"] = row["aicli_tps"] / row["sdk_tps"]
            # Of the best round, like the rate: the least disturbed one.
            row["aicli_server_cpu_ms_per_task"] = aicli_cpu[aicli.index(max(aicli))] * 1000
        rows[str(sessions)] = row
    return rows


def measure(fake: FakeApi, quick: bool) -> dict[str, Any]:
    """The same number of tasks at every N, so small N gets enough tasks to time."""
    # 96 tasks still give each of 16 sessions 6 in --quick; with fewer, the 16-session
    # round is over before it reaches a steady state and its ratio is noise.
    total, rounds = (96, 1) if quick else (160, 3)
    result: dict[str, Any] = {"tasks": total, "rounds": rounds}
    try:
        with AicliServer(fake) as server:
            result["by_sessions"] = _rows(fake, server, total, rounds)
    except ServerUnavailable as exc:
        result["aicli_skipped"] = str(exc)
        result["by_sessions"] = _rows(fake, None, total, rounds)
    return result
