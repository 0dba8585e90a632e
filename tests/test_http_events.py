"""A task's event log over HTTP: JSON, and live Server-Sent Events with resume and a cap."""

from __future__ import annotations

import time

import pytest
import requests

from aicli.testing.waiting import wait_for
from tests.http_server import Client, SseReader, error_of, serving

pytest_plugins = ("tests.http_fixtures",)

SSE = {"Accept": "text/event-stream"}
LONG_TASK = "[[bash: echo started; sleep 600]]"


def open_stream(client: Client, task_id: str, **kwargs) -> requests.Response:
    headers = {**SSE, **kwargs.pop("headers", {})}
    return client.get(
        f"/tasks/{task_id}/events", headers=headers, stream=True, timeout=(5, 30), **kwargs
    )


def is_terminal(event: dict) -> bool:
    return event["event"] == "status" and event["data"]["data"]["status"] in (
        "completed",
        "failed",
        "cancelled",
    )


@pytest.fixture
def session(client, workdir) -> dict:
    return client.open_session(workdir, allowed_tools=["Bash"])


def test_events_as_json(client, session):
    task = client.submit(session["id"], "[[say: logged]]")
    client.wait_terminal(task["id"])
    events = client.get(f"/tasks/{task['id']}/events").json()["data"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    statuses = [e["data"]["status"] for e in events if e["type"] == "status"]
    assert statuses == ["pending", "running", "completed"]
    assert any(e["type"] == "result" for e in events)
    later = client.get(f"/tasks/{task['id']}/events", params={"after": 2}).json()["data"]
    assert later == events[2:]
    nothing = client.get(f"/tasks/{task['id']}/events", params={"after": 999}).json()
    assert nothing == {"data": [], "has_more": False}
    anything = client.get(f"/tasks/{task['id']}/events", headers={"Accept": "*/*"})
    assert anything.json()["data"] == events


def test_a_live_stream_sees_events_early_and_ends_after_the_terminal_one(client, session):
    task = client.submit(session["id"], "[[slow: 3]] [[say: streamed]]")
    response = open_stream(client, task["id"])
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    reader = SseReader(response)

    first = reader.next_event()
    assert first["id"] == 1 and first["event"] == "status"
    assert client.get(f"/tasks/{task['id']}").json()["status"] in ("pending", "running")

    events = [first]
    while not is_terminal(events[-1]):
        events.append(reader.next_event())
    terminal_at = time.monotonic()
    assert reader.next_event() is None
    assert time.monotonic() - terminal_at < 1.0
    response.close()

    assert events[-1]["data"]["data"]["status"] == "completed"
    assert [e["data"] for e in events] == client.get(f"/tasks/{task['id']}/events").json()["data"]
    assert all(e["id"] == e["data"]["seq"] and e["event"] == e["data"]["type"] for e in events)
    assert client.get(f"/tasks/{task['id']}").json()["output"] == "streamed"


def test_reconnecting_with_last_event_id_gets_exactly_the_missing_events(client, session):
    task = client.submit(session["id"], "[[slow: 2]] [[say: resumed]]")
    first = open_stream(client, task["id"])
    reader = SseReader(first)
    seen = [reader.next_event(), reader.next_event()]
    first.close()

    # The header wins over ?after=, as a reconnecting EventSource keeps its URL.
    again = open_stream(
        client, task["id"], params={"after": 0}, headers={"Last-Event-ID": str(seen[-1]["id"])}
    )
    rest = SseReader(again).all_events()
    everything = client.get(f"/tasks/{task['id']}/events").json()["data"]
    assert [e["data"] for e in seen + rest] == everything
    assert is_terminal(rest[-1])

    from_query = SseReader(open_stream(client, task["id"], params={"after": 3})).all_events()
    assert [e["id"] for e in from_query] == [e["seq"] for e in everything[3:]]


def test_a_finished_tasks_stream_replays_and_ends(client, session):
    task = client.submit(session["id"], "[[say: over]]")
    client.wait_terminal(task["id"])
    everything = client.get(f"/tasks/{task['id']}/events").json()["data"]
    replay = SseReader(open_stream(client, task["id"])).all_events()
    assert [e["data"] for e in replay] == everything
    # Resuming after the terminal event: nothing to send, and the stream still ends.
    last = str(everything[-1]["seq"])
    assert (
        SseReader(open_stream(client, task["id"], headers={"Last-Event-ID": last})).all_events()
        == []
    )


def test_streams_and_long_polls_past_the_cap_get_503(client, session, runtime):
    assert runtime.settings.max_streams == 3
    task = client.submit(session["id"], LONG_TASK)
    # Readers are kept: dropping one closes its connection (urllib3 cleans up).
    readers = [SseReader(open_stream(client, task["id"])) for _ in range(3)]
    for reader in readers:
        assert reader.response.status_code == 200
        assert reader.next_event()["id"] == 1

    refused = open_stream(client, task["id"])
    assert "slots" in error_of(refused, 503, "unavailable")
    assert refused.headers["Retry-After"] == "1"
    long_poll = client.get(f"/tasks/{task['id']}", params={"wait": 5})
    error_of(long_poll, 503, "unavailable")
    assert long_poll.headers["Retry-After"] == "1"
    # A submit is never refused for want of a slot: it is accepted without the wait.
    waited = client.post(
        f"/sessions/{session['id']}/tasks",
        json={"command": "[[say: x]]"},
        headers={"Prefer": "wait=5"},
    )
    assert waited.status_code == 202 and "Preference-Applied" not in waited.headers
    assert client.get(f"/tasks/{task['id']}").status_code == 200

    # A client that goes away gives its slot back within a few seconds.
    readers.pop().response.close()
    hung_up = time.monotonic()

    def a_slot_is_free() -> requests.Response | None:
        response = open_stream(client, task["id"])
        if response.status_code == 200:
            return response
        response.close()
        return None

    readers.append(SseReader(wait_for(a_slot_is_free, timeout=10, what="a free slot")))
    assert time.monotonic() - hung_up < 5

    assert client.delete(f"/tasks/{task['id']}").json()["status"] == "cancelled"
    for reader in readers:
        events = reader.all_events()
        assert events[-1]["data"]["data"]["status"] == "cancelled"
    # All streams ended, so every slot is free again.
    assert client.get(f"/tasks/{task['id']}", params={"wait": 1}).status_code == 200


def test_quiet_streams_get_keep_alive_comments(runtime, workdir):
    with serving(runtime, keepalive_s=0.3) as url:
        client = Client(url)
        session = client.open_session(workdir, allowed_tools=["Bash"])
        task = client.submit(session["id"], LONG_TASK)
        response = open_stream(client, task["id"])
        lines = response.iter_lines(chunk_size=1, decode_unicode=True)
        pings = []
        for line in lines:
            if line == ": keep-alive":
                pings.append(time.monotonic())
                if len(pings) == 3:
                    break
        assert pings[-1] - pings[0] < 2.0
        response.close()
        client.delete(f"/tasks/{task['id']}")
