"""Completed tasks per second with N sessions × M tasks submitted at once.

Both sides start timing with every session's Claude process already warm (one
task run first), so the number is the steady state, not N process starts.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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


def _aicli_rate(server: AicliServer, sessions: int, tasks: int) -> float:
    """All tasks submitted at once (a thread per session keeps its order), then long-polled."""
    clients = [server.client() for _ in range(sessions)]
    session_ids = [client.open_session()["id"] for client in clients]
    with ThreadPoolExecutor(sessions) as pool:
        list(pool.map(lambda c, s: c.run(s, "warm up [[say: ok]]"), clients, session_ids))

        def drive(session: int) -> None:
            client, session_id = clients[session], session_ids[session]
            submitted = [client.submit(session_id, _prompt(session, task)) for task in range(tasks)]
            for task in submitted:
                client.wait(task["id"])

        started = time.perf_counter()
        list(pool.map(drive, range(sessions)))
        rate = sessions * tasks / (time.perf_counter() - started)
        list(pool.map(lambda c, s: c.close_session(s), clients, session_ids))
    return rate


def _rows(fake: FakeApi, server: AicliServer | None, total: int, rounds: int) -> dict[str, Any]:
    """aicli, then the SDK, alternating at each N, so drifting load hits both.

    The best round counts: load from elsewhere only ever slows a round down.
    """
    rows: dict[str, Any] = {}
    for sessions in SESSION_COUNTS:
        tasks = total // sessions
        aicli, sdk = [], []
        for _ in range(rounds):
            if server is not None:
                aicli.append(_aicli_rate(server, sessions, tasks))
            sdk.append(asyncio.run(_sdk_rate(fake, sessions, tasks)))
        row: dict[str, Any] = {"tasks_per_session": tasks, "sdk_rounds": sdk, "sdk_tps": max(sdk)}
        if aicli:
            row.update(aicli_rounds=aicli, aicli_tps=max(aicli))
            row["ratio_aicli_over_sdk"] = row["aicli_tps"] / row["sdk_tps"]
        rows[str(sessions)] = row
    return rows


def measure(fake: FakeApi, quick: bool) -> dict[str, Any]:
    """The same number of tasks at every N, so small N gets enough tasks to time."""
    total, rounds = (48, 1) if quick else (160, 2)
    result: dict[str, Any] = {"tasks": total, "rounds": rounds}
    try:
        with AicliServer(fake) as server:
            result["by_sessions"] = _rows(fake, server, total, rounds)
    except ServerUnavailable as exc:
        result["aicli_skipped"] = str(exc)
        result["by_sessions"] = _rows(fake, None, total, rounds)
    return result
