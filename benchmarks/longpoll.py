"""How late a long-poll answers: the task's ``completed_at`` to the response at the client.

A client that waits with ``?wait=`` should hear of completion at once, not at
the next tick of some poll loop inside the server (goal: within 100 ms).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from benchmarks.fake import FakeApi
from benchmarks.server import AicliServer
from benchmarks.stats import summary

# Long enough that the long-poll is surely waiting when the task completes.
PROMPT = "[[slow: 0.3]]"


def measure(fake: FakeApi, quick: bool) -> dict[str, Any]:
    count = 10 if quick else 30
    delays = []
    with AicliServer(fake) as server:
        client = server.client()
        session_id = client.open_session()["id"]
        client.run(session_id, "warm up [[say: ok]]")
        for index in range(count):
            task_id = client.submit(session_id, f"long-poll {index} {PROMPT}")["id"]
            task = client.get_task(task_id, wait=30)
            arrived = time.time()
            if task["status"] != "completed":
                raise RuntimeError(f"long-poll answered before completion: {task['status']}")
            delays.append(arrived - datetime.fromisoformat(task["completed_at"]).timestamp())
    return {"prompt": PROMPT, **summary(delays)}
