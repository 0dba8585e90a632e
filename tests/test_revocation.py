"""Revoking a principal stops its work, not only its token, over real HTTP.

Its sessions close: a pending task is cancelled and never runs, a running one is
interrupted, a pending approval expires; and its open SSE streams and long-polls
end within a second, on the node that revoked and on a peer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aicli import Runtime
from aicli.actors.notifier import events_of
from aicli.runtime import REVOKED_PENDING
from aicli.testing.postgres import fresh_schema_url
from aicli.testing.waiting import wait_for
from tests.http_server import Client, SseReader, error_of, serving

pytest_plugins = ("tests.http_fixtures", "tests.storage_fixtures")

ROOT_TOKEN = "root-token-for-tests"
SSE = {"Accept": "text/event-stream"}
SLOW = "[[slow: 30]] [[say: late]]"
# How soon an open wait must end; measured from when the revocation is sent.
ENDS_WITHIN_S = 1.0


class Ended:
    """A call run on its own thread, and when it returned."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.at: float | None = None

        def run() -> None:
            self.result = call()
            self.at = time.monotonic()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def within(self, since: float, seconds: float) -> Any:
        self._thread.join(timeout=seconds + 30)
        assert self.at is not None, "the call never returned"
        assert self.at - since < seconds, f"it took {self.at - since:.2f} s"
        return self.result


def _watched(runtime: Runtime, key: str) -> None:
    """Wait until someone on ``runtime`` waits on ``key``: the wait is open there."""
    wait_for(lambda: key in runtime.notifier._watches, 10, f"a waiter on {key}")


def _stream(url: str, token: str, task_id: str) -> Ended:
    """A stream on a client of its own (a ``requests`` session is for one thread)."""
    path = f"/tasks/{task_id}/events"
    response = Client(url, token=token).get(path, headers=SSE, stream=True, timeout=(5, 60))
    assert response.status_code == 200
    return Ended(SseReader(response).all_events)


def _long_poll(url: str, token: str, task_id: str) -> Ended:
    client = Client(url, token=token)
    return Ended(lambda: client.get(f"/tasks/{task_id}", params={"wait": 60}, timeout=90))


def _submit_waiting(url: str, token: str, session_id: str) -> Ended:
    """A submit with ``Prefer: wait=60``: the other long-poll of the API."""
    client = Client(url, token=token)
    return Ended(
        lambda: client.post(
            f"/sessions/{session_id}/tasks",
            json={"command": "[[say: never either]]"},
            headers={"Prefer": "wait=60"},
        )
    )


def _running(client: Client, task_id: str) -> None:
    wait_for(lambda: client.get(f"/tasks/{task_id}").json()["status"] == "running", 30, "a start")


def _user(admin: Client) -> tuple[str, str]:
    """A new user's id and token."""
    made = admin.post("/principals", json={"name": "leaving"})
    assert made.status_code == 201, made.text
    return made.json()["id"], made.json()["token"]


@pytest.fixture
def world(make_runtime) -> Iterator[tuple[Runtime, str, Client]]:
    runtime = make_runtime(api_token=ROOT_TOKEN, max_streams=6)
    with serving(runtime) as url:
        yield runtime, url, Client(url, token=ROOT_TOKEN)


def test_revoking_a_user_ends_its_tasks_streams_and_long_polls(world, workdir):
    runtime, url, admin = world
    user_id, token = _user(admin)
    user = Client(url, token=token)
    session = user.open_session(workdir)
    running = user.submit(session["id"], SLOW)
    _running(user, running["id"])
    pending = user.submit(session["id"], "[[say: never]]")
    stream = _stream(url, token, running["id"])
    poll = _long_poll(url, token, pending["id"])
    submitted = _submit_waiting(url, token, session["id"])
    _watched(runtime, events_of(running["id"]))
    _watched(runtime, pending["id"])
    wait_for(lambda: len(runtime.store.pending_task_ids(session["id"])) == 2, 10, "the submit")
    # An admin's stream of the same task is not the revoked principal's: it sees the end.
    watching = _stream(url, ROOT_TOKEN, running["id"])

    sent = time.monotonic()
    revoked = admin.delete(f"/principals/{user_id}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    # Ended, not by the task's end: nothing reached the revoked principal after its revocation.
    assert "cancelled" not in str(stream.within(sent, ENDS_WITHIN_S))
    error_of(poll.within(sent, ENDS_WITHIN_S), 401, "unauthorized")
    error_of(submitted.within(sent, ENDS_WITHIN_S), 401, "unauthorized")

    cancelled = admin.get(f"/tasks/{pending['id']}").json()
    assert (cancelled["status"], cancelled["error"]) == ("cancelled", REVOKED_PENDING)
    assert cancelled["started_at"] is None
    events = admin.get(f"/tasks/{pending['id']}/events").json()["data"]
    statuses = [e["data"]["status"] for e in events]
    assert statuses == ["pending", "cancelled"]  # it never ran
    interrupted = admin.wait_terminal(running["id"])
    assert interrupted["status"] == "cancelled"
    assert admin.get(f"/sessions/{session['id']}").json()["status"] == "closed"
    seen = watching.within(sent, 30)
    assert seen[-1]["data"]["data"] == {"status": "cancelled", "error": interrupted["error"]}
    # Its token no longer opens anything; revoking again changes nothing.
    error_of(user.post("/sessions", json={"workdir": workdir}), 401, "unauthorized")
    again = admin.delete(f"/principals/{user_id}").json()
    # The same principal, revoked at the same moment (what it stores grew as its tasks ended).
    assert {**again, "stored_bytes": 0} == {**revoked.json(), "stored_bytes": 0}


def test_revoking_a_user_expires_its_pending_approval(world, workdir):
    _, url, admin = world
    user_id, token = _user(admin)
    user = Client(url, token=token)
    session = user.open_session(workdir, approvals="ask")
    task = user.submit(session["id"], "[[bash: echo asked > asked.txt]]")

    def pending() -> list[dict[str, Any]]:
        page = user.get("/approvals", params={"task_id": task["id"], "status": "pending"})
        return page.json()["data"]

    approval = wait_for(pending, 30, "a pending approval")[0]
    assert admin.delete(f"/principals/{user_id}").status_code == 200
    expired = admin.get(f"/approvals/{approval['id']}").json()
    assert expired["status"] == "expired"
    assert admin.get(f"/tasks/{task['id']}").json()["status"] == "cancelled"


def test_a_revocation_written_to_the_database_alone_is_enforced(make_runtime, workdir):
    """As ``aicli principals revoke`` does: the server learns of it at a lease renewal."""
    runtime = make_runtime(api_token=ROOT_TOKEN, lease_ttl=1.5)
    with serving(runtime) as url:
        user_id, token = _user(Client(url, token=ROOT_TOKEN))
        user = Client(url, token=token)
        session = user.open_session(workdir)
        running = user.submit(session["id"], SLOW)
        _running(user, running["id"])
        stream = _stream(url, token, running["id"])
        _watched(runtime, events_of(running["id"]))
        sent = time.monotonic()
        runtime.store.principals.revoke(user_id)
        stream.within(sent, 3 * runtime.settings.lease_ttl)
        wait_for(
            lambda: runtime.store.get_session(session["id"]).status == "closed", 10, "the close"
        )
        assert runtime.wait(running["id"], 30).status == "cancelled"


@pytest.mark.postgres
def test_a_revocation_on_one_node_ends_the_waits_on_another(
    make_runtime, postgres_database, workdir
):
    database_url = fresh_schema_url(postgres_database)
    nodes = [make_runtime(api_token=ROOT_TOKEN, database_url=database_url) for _ in range(2)]
    with serving(nodes[0]) as first_url, serving(nodes[1]) as second_url:
        user_id, token = _user(Client(first_url, token=ROOT_TOKEN))
        on_first = Client(first_url, token=token)
        session = on_first.open_session(workdir)
        running = on_first.submit(session["id"], SLOW)
        _running(on_first, running["id"])
        pending = on_first.submit(session["id"], "[[say: never]]")
        stream = _stream(second_url, token, running["id"])
        poll = _long_poll(second_url, token, pending["id"])
        _watched(nodes[1], events_of(running["id"]))
        _watched(nodes[1], pending["id"])
        sent = time.monotonic()
        admin = Client(first_url, token=ROOT_TOKEN)
        assert admin.delete(f"/principals/{user_id}").status_code == 200
        stream.within(sent, ENDS_WITHIN_S)
        error_of(poll.within(sent, ENDS_WITHIN_S), 401, "unauthorized")
        assert admin.wait_terminal(running["id"])["status"] == "cancelled"
        assert admin.get(f"/tasks/{pending['id']}").json()["error"] == REVOKED_PENDING
