"""Many open streams on one running task must not starve ordinary requests."""

from __future__ import annotations

import threading
import time

import requests

from tests.http_server import Client, SseReader, serving

pytest_plugins = ("tests.http_fixtures",)

STREAMS = 50


def test_fifty_streams_on_one_task_leave_reads_prompt(make_runtime, workdir):
    runtime = make_runtime(max_streams=STREAMS)
    with serving(runtime) as url:
        client = Client(url)
        session = client.open_session(workdir)
        done = client.submit(session["id"], "[[say: an earlier task]]")
        client.wait_terminal(done["id"])
        task = client.submit(session["id"], "[[slow: 6]] [[say: watched]]")
        readers: list[SseReader] = []
        endings: list[list[dict]] = []
        opened = threading.Barrier(STREAMS + 1)

        def watch() -> None:
            response = requests.get(
                f"{url}/tasks/{task['id']}/events",
                headers={"Accept": "text/event-stream"},
                stream=True,
                timeout=(5, 60),
            )
            assert response.status_code == 200
            reader = SseReader(response)
            readers.append(reader)
            opened.wait(timeout=30)
            endings.append(reader.all_events())

        watchers = [threading.Thread(target=watch) for _ in range(STREAMS)]
        for watcher in watchers:
            watcher.start()
        opened.wait(timeout=30)

        slowest = 0.0
        reads = 0
        while client.get(f"/tasks/{task['id']}").json()["status"] != "completed":
            for path in (f"/tasks/{done['id']}", "/tasks?limit=50", "/sessions"):
                asked = time.monotonic()
                assert client.get(path, timeout=10).status_code == 200
                slowest = max(slowest, time.monotonic() - asked)
                reads += 1
        for watcher in watchers:
            watcher.join(timeout=30)

    assert reads >= 10, "the task ended before the reads could be measured"
    assert slowest < 2.0, f"a read took {slowest:.2f}s with {STREAMS} streams open"
    assert len(endings) == STREAMS
    for events in endings:
        assert events[-1]["event"] == "status"
        assert events[-1]["data"]["data"]["status"] == "completed"
