"""A long event log: JSON in pages of ``limit``, and a stream that never reads it whole."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from aicli.http.events import STREAM_PAGE
from aicli.testing.waiting import wait_for
from tests.http_server import SseReader, error_of

pytest_plugins = ("tests.http_fixtures",)

SSE = {"Accept": "text/event-stream"}
LOGGED = 2500
# Its pending status, the appended events, its cancelled status.
TOTAL = LOGGED + 2


@pytest.fixture
def pending_task(client, runtime, workdir) -> Iterator[str]:
    """A task that stays pending behind a busy one, so only this test adds to its log."""
    session = client.open_session(workdir, allowed_tools=["Bash"])
    busy = client.submit(session["id"], "[[bash: echo started; sleep 600]]")
    wait_for(lambda: runtime.get_task(busy["id"]).status == "running", what="the busy task")
    task = client.submit(session["id"], "[[say: never]]")
    yield task["id"]
    client.delete(f"/tasks/{busy['id']}")


def fill_and_end(client, runtime, task_id: str) -> None:
    entries = [("message", {"n": n, "text": "x" * 200}) for n in range(LOGGED)]
    runtime.store.append_events(task_id, entries)
    assert client.delete(f"/tasks/{task_id}").json()["status"] == "cancelled"


@pytest.fixture
def store_limits(runtime, monkeypatch) -> list[int | None]:
    """The ``limit`` of every read of events from the store by a request (a Waitress thread)."""
    limits: list[int | None] = []
    list_events, event_page = runtime.store.list_events, runtime.store.event_page

    def recording(task_id, *, after=0, limit=None):
        if threading.current_thread().name.startswith("waitress"):
            limits.append(limit)
        return list_events(task_id, after=after, limit=limit)

    def recording_page(task_id, *, after=0, limit):
        if threading.current_thread().name.startswith("waitress"):
            limits.append(limit)
        return event_page(task_id, after=after, limit=limit)

    monkeypatch.setattr(runtime.store, "list_events", recording)
    monkeypatch.setattr(runtime.store, "event_page", recording_page)
    return limits


def test_json_pages_of_a_long_log(client, runtime, pending_task):
    fill_and_end(client, runtime, pending_task)
    path = f"/tasks/{pending_task}/events"
    pages, after = [], 0
    while not pages or pages[-1]["has_more"]:
        pages.append(client.get(path, params={"after": after, "limit": 1000}).json())
        after = pages[-1]["data"][-1]["seq"]
    assert [page["has_more"] for page in pages] == [True, True, False]
    seqs = [event["seq"] for page in pages for event in page["data"]]
    assert seqs == list(range(1, TOTAL + 1))
    assert pages[-1]["data"][-1]["data"]["status"] == "cancelled"

    assert client.get(path).json() == pages[0], "the default limit is 1000"
    # A last page exactly full says there is no more.
    rest = TOTAL - 2000
    assert not client.get(path, params={"after": 2000, "limit": rest}).json()["has_more"]
    assert client.get(path, params={"after": 2000, "limit": rest - 1}).json()["has_more"]


@pytest.mark.parametrize("limit", ["0", "1001", "abc", "-1", "1.5"])
def test_an_invalid_limit_is_400_in_either_form(client, pending_task, limit):
    for headers in ({}, SSE):
        response = client.get(
            f"/tasks/{pending_task}/events", params={"limit": limit}, headers=headers
        )
        assert "'limit'" in error_of(response, 400, "invalid_request")
        assert response.json()["error"]["details"] == {"field": "limit"}


def test_streams_read_a_long_log_a_page_at_a_time(client, runtime, pending_task, store_limits):
    path = f"/tasks/{pending_task}/events"
    live = SseReader(client.get(path, headers=SSE, stream=True, timeout=(5, 30)))
    assert live.next_event()["id"] == 1
    fill_and_end(client, runtime, pending_task)
    followed = [1] + [event["id"] for event in live.all_events()]

    replay = SseReader(client.get(path, headers=SSE, stream=True, timeout=(5, 30)))
    replayed = replay.all_events()

    assert followed == list(range(1, TOTAL + 1))
    assert [event["id"] for event in replayed] == list(range(1, TOTAL + 1))
    assert replayed[-1]["data"]["data"]["status"] == "cancelled"
    assert store_limits and all(
        limit is not None and limit <= STREAM_PAGE for limit in store_limits
    ), store_limits
