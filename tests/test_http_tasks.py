"""Sessions and tasks through HTTP only: the real runtime, Waitress and the Claude CLI.

Every response is also checked against the served OpenAPI document (see ``http_server``).
"""

from __future__ import annotations

import datetime as dt

import psutil

from aicli.testing.waiting import wait_for
from tests.http_server import Client, serving

pytest_plugins = ("tests.http_fixtures",)

TERMINAL = ("completed", "failed", "cancelled")


def sleepers() -> list[psutil.Process]:
    """The tool's sleeps of this test's own server (in this process), not of other tests'
    servers on the machine: a killed one leaves its sandboxes until the next run reaps them."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if "sleep 600" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def tool_started(client: Client, task_id: str) -> bool:
    events = client.get(f"/tasks/{task_id}/events").json()["data"]
    return any(
        block.get("type") == "tool_use"
        for event in events
        if event["type"] == "assistant"
        for block in event["data"].get("content", [])
    )


def test_a_submitted_task_runs_and_its_result_is_stored(client, workdir):
    response = client.post("/sessions", json={"workdir": workdir, "metadata": {"team": "qa"}})
    assert response.status_code == 201
    session = response.json()
    assert response.headers["Location"] == f"/sessions/{session['id']}"
    assert session["status"] == "idle" and session["metadata"] == {"team": "qa"}
    assert session["claude_session_id"] is None

    response = client.post(
        f"/sessions/{session['id']}/tasks",
        json={"command": "[[say: hello there]]", "metadata": {"ticket": "7"}},
    )
    assert response.status_code == 202
    task = response.json()
    assert response.headers["Location"] == f"/tasks/{task['id']}"
    assert task["status"] == "pending" and task["output"] is None

    done = client.wait_terminal(task["id"])
    assert done["status"] == "completed"
    assert done["output"] == "hello there"
    assert done["metadata"] == {"ticket": "7"}
    assert done["cost_usd"] > 0 and done["num_turns"] == 1
    assert done["usage"]["output_tokens"] > 0
    assert done["started_at"] <= done["completed_at"]

    again = client.get(f"/tasks/{task['id']}").json()
    assert again == done
    session = client.get(f"/sessions/{session['id']}").json()
    assert session["task_counts"]["completed"] == 1
    assert session["claude_session_id"]


def test_status_goes_pending_running_completed(client, workdir):
    session = client.open_session(workdir)
    slow = client.submit(session["id"], "[[slow: 3]] [[say: slowly]]")
    queued = client.submit(session["id"], "[[say: after]]")
    assert slow["status"] == "pending" and queued["status"] == "pending"

    seen = [slow["status"]]

    def running() -> bool:
        status = client.get(f"/tasks/{slow['id']}").json()["status"]
        if status != seen[-1]:
            seen.append(status)
        return status == "running"

    wait_for(running, timeout=30, what="the slow task to run")
    waiting = client.get(f"/tasks/{queued['id']}").json()
    assert waiting["status"] == "pending" and waiting["queue_position"] == 0
    assert client.get(f"/sessions/{session['id']}").json()["status"] == "busy"

    done = client.wait_terminal(slow["id"])
    seen.append(done["status"])
    assert seen == ["pending", "running", "completed"]
    assert client.wait_terminal(queued["id"])["output"] == "after"


def test_an_idempotency_key_returns_the_first_task(client, workdir):
    session = client.open_session(workdir)
    path = f"/sessions/{session['id']}/tasks"
    first = client.post(path, json={"command": "[[say: once]]"}, headers={"Idempotency-Key": "k1"})
    retry = client.post(path, json={"command": "[[say: once]]"}, headers={"Idempotency-Key": "k1"})
    other = client.post(path, json={"command": "[[say: once]]"}, headers={"Idempotency-Key": "k2"})
    assert (first.status_code, retry.status_code, other.status_code) == (202, 200, 202)
    assert retry.json()["id"] == first.json()["id"] != other.json()["id"]
    assert retry.headers["Location"] == f"/tasks/{first.json()['id']}"
    assert len(client.walk(path)) == 2


def test_an_idempotent_retry_after_the_session_closed_returns_the_first_task(client, workdir):
    session = client.open_session(workdir)
    path = f"/sessions/{session['id']}/tasks"
    first = client.post(path, json={"command": "[[say: once]]"}, headers={"Idempotency-Key": "k"})
    assert client.delete(f"/sessions/{session['id']}").status_code == 200
    retry = client.post(path, json={"command": "[[say: once]]"}, headers={"Idempotency-Key": "k"})
    assert retry.status_code == 200
    assert retry.json()["id"] == first.json()["id"]
    fresh = client.post(path, json={"command": "[[say: new]]"}, headers={"Idempotency-Key": "n"})
    assert fresh.status_code == 409 and fresh.json()["error"]["code"] == "session_closed"


def test_lists_filter_and_paginate(client, workdir, tmp_path):
    one = client.open_session(workdir)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    two = client.open_session(str(other_dir))
    ids_one = [client.submit(one["id"], f"[[say: {n}]]")["id"] for n in range(5)]
    ids_two = [client.submit(two["id"], "[[say: x]]")["id"]]
    failing = client.submit(two["id"], "[[error: 401]]")["id"]
    ids_two.append(failing)
    for task_id in ids_one + ids_two:
        client.wait_terminal(task_id)

    newest_first = client.walk("/tasks", limit=2)
    assert [t["id"] for t in newest_first] == list(reversed(ids_one + ids_two))
    oldest_first = client.walk("/tasks", limit=3, order="asc")
    assert [t["id"] for t in oldest_first] == ids_one + ids_two

    assert [t["id"] for t in client.walk("/tasks", session_id=one["id"], limit=2)] == list(
        reversed(ids_one)
    )
    scoped = client.walk(f"/sessions/{two['id']}/tasks", order="asc")
    assert [t["id"] for t in scoped] == ids_two

    failed = client.walk("/tasks", status="failed")
    assert [t["id"] for t in failed] == [failing]
    assert "Invalid API key" in failed[0]["error"]
    assert len(client.walk("/tasks", status="completed,failed")) == 7
    assert client.walk(f"/sessions/{one['id']}/tasks", status="failed") == []

    # Time bounds are exclusive and accept any RFC 3339 offset.
    middle = next(t for t in oldest_first if t["id"] == ids_one[2])
    created = dt.datetime.fromisoformat(middle["created_at"])
    in_plus_two = created.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
    after = client.walk("/tasks", created_after=middle["created_at"], order="asc")
    assert [t["id"] for t in after] == ids_one[3:] + ids_two
    before = client.walk("/tasks", created_before=in_plus_two, order="asc")
    assert [t["id"] for t in before] == ids_one[:2]
    window = client.walk(
        "/tasks",
        created_after=oldest_first[0]["created_at"],
        created_before=oldest_first[-1]["created_at"],
    )
    assert len(window) == 5

    sessions = client.walk("/sessions", limit=1)
    assert [s["id"] for s in sessions] == [two["id"], one["id"]]
    assert client.walk("/sessions", status="closed") == []


def test_a_cursor_stays_valid_while_tasks_are_added(client, workdir):
    session = client.open_session(workdir)
    ids = [client.submit(session["id"], f"[[say: {n}]]")["id"] for n in range(4)]
    page = client.get("/tasks", params={"limit": 2}).json()
    assert [t["id"] for t in page["data"]] == ids[:1:-1] and page["has_more"]
    newer = client.submit(session["id"], "[[say: newer]]")["id"]
    rest = client.get("/tasks", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [t["id"] for t in rest["data"]] == ids[1::-1]
    assert not rest["has_more"] and rest["next_cursor"] is None
    assert client.walk("/tasks", limit=2)[0]["id"] == newer


def test_cancel_interrupts_a_running_task(client, workdir):
    session = client.open_session(workdir, allowed_tools=["Bash"])
    task = client.submit(session["id"], "[[bash: echo started; sleep 600]]")
    wait_for(lambda: tool_started(client, task["id"]), timeout=30, what="the Bash tool call")
    wait_for(sleepers, timeout=30, what="the tool's sleep")

    response = client.delete(f"/tasks/{task['id']}")
    assert response.status_code == 200
    cancelled = response.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["error"] and cancelled["completed_at"]
    wait_for(lambda: not sleepers(), timeout=10, what="the sleep to end")

    again = client.delete(f"/tasks/{task['id']}")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert client.get(f"/tasks/{task['id']}").json()["status"] == "cancelled"
    nxt = client.submit(session["id"], "[[say: next]]")
    assert client.wait_terminal(nxt["id"])["output"] == "next"


def test_cancel_of_a_pending_task_means_it_never_runs(client, workdir):
    session = client.open_session(workdir)
    slow = client.submit(session["id"], "[[slow: 2]] [[say: first]]")
    pending = client.submit(session["id"], "[[say: never]]")
    cancelled = client.delete(f"/tasks/{pending['id']}").json()
    assert cancelled["status"] == "cancelled" and cancelled["started_at"] is None
    assert client.wait_terminal(slow["id"])["status"] == "completed"
    assert client.get(f"/tasks/{pending['id']}").json()["started_at"] is None


def test_closing_a_session(client, workdir):
    session = client.open_session(workdir, allowed_tools=["Bash"])
    running = client.submit(session["id"], "[[bash: echo started; sleep 600]]")
    wait_for(lambda: tool_started(client, running["id"]), timeout=30, what="the tool call")
    closed = client.delete(f"/sessions/{session['id']}")
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    assert client.get(f"/tasks/{running['id']}").json()["status"] == "cancelled"
    again = client.delete(f"/sessions/{session['id']}")
    assert again.status_code == 200 and again.json()["status"] == "closed"
    rejected = client.post(f"/sessions/{session['id']}/tasks", json={"command": "hi"})
    assert rejected.status_code == 409
    assert rejected.json()["error"]["code"] == "session_closed"
    assert [s["id"] for s in client.walk("/sessions", status="closed")] == [session["id"]]


def test_a_restarted_server_still_has_earlier_tasks(make_runtime, workdir):
    first_runtime = make_runtime()
    with serving(first_runtime) as url:
        client = Client(url)
        session = client.open_session(workdir)
        task = client.submit(session["id"], "[[say: remembered]]")
        done = client.wait_terminal(task["id"])
        events = client.get(f"/tasks/{task['id']}/events").json()
    first_runtime.stop()

    with serving(make_runtime()) as url:
        client = Client(url)
        assert client.get(f"/tasks/{task['id']}").json() == done
        assert done["output"] == "remembered"
        assert [t["id"] for t in client.walk("/tasks")] == [task["id"]]
        assert client.get(f"/tasks/{task['id']}/events").json() == events
        resumed = client.submit(session["id"], "[[say: still here]]")
        assert client.wait_terminal(resumed["id"])["output"] == "still here"


def test_prefer_wait_answers_with_the_finished_task_in_one_round_trip(client, workdir):
    session = client.open_session(workdir)
    path = f"/sessions/{session['id']}/tasks"
    response = client.post(
        path, json={"command": "[[say: at once]]"}, headers={"Prefer": "wait=30"}
    )
    assert response.status_code == 200
    assert response.headers["Preference-Applied"] == "wait=30"
    task = response.json()
    assert response.headers["Location"] == f"/tasks/{task['id']}"
    assert task["status"] == "completed" and task["output"] == "at once"
    assert client.get(f"/tasks/{task['id']}").json() == task


def test_prefer_wait_that_runs_out_answers_202_as_without_it(client, workdir):
    session = client.open_session(workdir)
    path = f"/sessions/{session['id']}/tasks"
    response = client.post(
        path, json={"command": "[[slow: 4]] [[say: late]]"}, headers={"Prefer": "wait=1"}
    )
    assert response.status_code == 202
    assert "Preference-Applied" not in response.headers
    assert response.json()["status"] in ("pending", "running")
    assert client.wait_terminal(response.json()["id"])["output"] == "late"


def test_a_prefer_value_that_cannot_be_used_is_ignored(client, workdir):
    session = client.open_session(workdir)
    path = f"/sessions/{session['id']}/tasks"
    for value in ("wait=61", "wait=-1", "wait=1.5", "wait", "wait=abc", "return=minimal"):
        response = client.post(path, json={"command": "[[say: ok]]"}, headers={"Prefer": value})
        assert response.status_code == 202, value
        assert "Preference-Applied" not in response.headers
    # Other preferences and parameters beside it do not hide it.
    response = client.post(
        path, json={"command": "[[say: ok]]"}, headers={"Prefer": "respond-async, WAIT=20; x=y"}
    )
    assert response.status_code == 200 and response.headers["Preference-Applied"] == "wait=20"


def test_prefer_wait_on_an_idempotent_retry_waits_for_the_first_task(client, workdir):
    session = client.open_session(workdir)
    path = f"/sessions/{session['id']}/tasks"
    first = client.post(path, json={"command": "[[say: once]]"}, headers={"Idempotency-Key": "w"})
    retry = client.post(
        path,
        json={"command": "[[say: once]]"},
        headers={"Idempotency-Key": "w", "Prefer": "wait=30"},
    )
    assert retry.status_code == 200 and retry.headers["Preference-Applied"] == "wait=30"
    assert retry.json()["id"] == first.json()["id"]
    assert retry.json()["status"] == "completed"
