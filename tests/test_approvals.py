"""A person in the loop, over HTTP, with the real CLI against the fake API.

A session with ``approvals: "ask"`` and no allowed tools: a Bash command that
writes a file is something the CLI's own rules do not allow, so it asks; a
read-only one (``echo hi``) it runs without asking.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from aicli.testing.waiting import wait_for
from tests.http_server import Client, SseReader, error_of

pytest_plugins = ("tests.http_fixtures",)

SSE = {"Accept": "text/event-stream"}


def pending_of(client: Client, task_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """The task's pending approval, once it is listed. The default deadline is the one a
    task gets to end (``wait_terminal``): before it asks, a session's first task starts the
    CLI in its sandbox, which under a loaded machine took more than 10 s."""

    def listed() -> dict[str, Any] | None:
        page = client.get("/approvals", params={"task_id": task_id, "status": "pending"}).json()
        return page["data"][0] if page["data"] else None

    return wait_for(listed, timeout, f"a pending approval of task {task_id}")


def decide(client: Client, approval_id: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"/approvals/{approval_id}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def asking(client: Client, workdir: str) -> dict[str, Any]:
    return client.open_session(workdir, approvals="ask")


def test_a_tool_use_waits_for_a_person_and_allow_runs_it(client, workdir, asking, fake_api):
    assert (asking["approvals"], asking["approval_timeout_s"]) == ("ask", 3600)
    target = Path(workdir) / "allowed.txt"
    task = client.submit(asking["id"], "[[bash: echo allowed > allowed.txt]]")
    events = client.get(f"/tasks/{task['id']}/events", headers=SSE, stream=True, timeout=(5, 30))
    reader = SseReader(events)
    asked_at = None
    while asked_at is None:
        event = reader.next_event()
        assert event is not None
        if event["event"] == "assistant" and any(
            block.get("type") == "tool_use" for block in event["data"]["data"]["content"]
        ):
            asked_at = time.monotonic()  # Claude asked to use the tool
    approval = pending_of(client, task["id"], timeout=2.0)
    assert time.monotonic() - asked_at < 2.0
    requested = reader.next_event()
    assert requested["event"] == "approval_requested"
    assert requested["data"]["data"]["approval"]["id"] == approval["id"]
    assert approval["kind"] == "tool" and approval["tool_name"] == "Bash"
    assert approval["input"]["command"] == "echo allowed > allowed.txt"
    assert approval["suggestions"] and approval["decided_by"] is None
    running = client.get(f"/tasks/{task['id']}").json()
    assert (running["status"], running["awaiting_approval"]) == ("running", approval["id"])
    assert not target.exists()

    decided = decide(client, approval["id"], decision="allow")
    assert decided["status"] == "allowed" and decided["decided_at"]
    assert decided["decided_by"] == "root"  # the open service's caller
    done = client.wait_terminal(task["id"])
    assert done["status"] == "completed" and done["awaiting_approval"] is None
    assert target.read_text() == "allowed\n"
    later = [e["event"] for e in reader.all_events()]
    assert later[0] == "approval_decided" and "tool_result" in later
    assert client.get(f"/approvals/{approval['id']}").json() == decided


def test_deny_tells_claude_the_message_and_the_turn_goes_on(client, workdir, asking, fake_api):
    task = client.submit(asking["id"], "[[bash: echo no > denied.txt]]")
    approval = pending_of(client, task["id"])
    decided = decide(client, approval["id"], decision="deny", message="Not in this repo, please.")
    assert (decided["status"], decided["message"]) == ("denied", "Not in this repo, please.")
    done = client.wait_terminal(task["id"])
    assert done["status"] == "completed"
    assert not (Path(workdir) / "denied.txt").exists()
    results = [r.last_tool_result for r in fake_api.requests_with_prompt("denied.txt")]
    assert any(result and "Not in this repo, please." in result for result in results)


def test_updated_input_runs_the_changed_command_instead(client, workdir, asking):
    task = client.submit(asking["id"], "[[bash: echo asked > asked.txt]]")
    approval = pending_of(client, task["id"])
    changed = {**approval["input"], "command": "echo changed > changed.txt"}
    decide(client, approval["id"], decision="allow", updated_input=changed)
    assert client.wait_terminal(task["id"])["status"] == "completed"
    assert (Path(workdir) / "changed.txt").read_text() == "changed\n"
    assert not (Path(workdir) / "asked.txt").exists()
    # The log keeps what ran, beside what Claude asked for.
    events = client.get(f"/tasks/{task['id']}/events").json()["data"]
    [decided] = [e["data"] for e in events if e["type"] == "approval_decided"]
    assert decided["updated_input"] == changed
    assert decided["approval"]["input"]["command"] == "echo asked > asked.txt"


def test_a_use_too_big_to_remember_is_refused_and_can_still_be_decided(client, workdir, asking):
    content = "x" * 20_000
    given = json.dumps({"file_path": str(Path(workdir) / "big.txt"), "content": content})
    task = client.submit(asking["id"], f"[[tool: Write {given}]]")
    approval = pending_of(client, task["id"])
    assert approval["tool_name"] == "Write"
    url = f"/approvals/{approval['id']}"
    response = client.post(url, json={"decision": "allow", "remember": True})
    assert "too big to remember" in error_of(response, 400, "invalid_request")
    decide(client, approval["id"], decision="allow")
    assert client.wait_terminal(task["id"])["status"] == "completed"
    assert (Path(workdir) / "big.txt").read_text() == content


def test_remember_allows_the_next_identical_use_without_asking(client, workdir, asking):
    command = "[[bash: echo again >> remembered.txt]]"
    first = client.submit(asking["id"], command)
    approval = pending_of(client, first["id"])
    decide(client, approval["id"], decision="allow", remember=True)
    assert client.wait_terminal(first["id"])["status"] == "completed"
    session = client.get(f"/sessions/{asking['id']}").json()
    [rule] = session["approval_rules"]
    assert (rule["tool_name"], rule["input"], rule["approval_id"]) == (
        "Bash",
        approval["input"],
        approval["id"],
    )

    second = client.submit(asking["id"], command)
    assert client.wait_terminal(second["id"])["status"] == "completed"
    [ruled] = client.get("/approvals", params={"task_id": second["id"]}).json()["data"]
    assert (ruled["status"], ruled["decided_by"]) == ("allowed", "rule")
    assert (Path(workdir) / "remembered.txt").read_text() == "again\nagain\n"
    # Only an identical use: another command still asks.
    third = client.submit(asking["id"], "[[bash: echo other >> remembered.txt]]")
    decide(client, pending_of(client, third["id"])["id"], decision="deny")
    assert client.wait_terminal(third["id"])["status"] == "completed"


def test_a_question_is_answered_and_claude_gets_the_answer(client, asking, fake_api):
    task = client.submit(asking["id"], "[[ask: Which database? | SQLite | PostgreSQL]]")
    approval = pending_of(client, task["id"])
    assert (approval["kind"], approval["tool_name"]) == ("question", "AskUserQuestion")
    [question] = approval["input"]["questions"]
    assert question["question"] == "Which database?"
    assert [option["label"] for option in question["options"]] == ["SQLite", "PostgreSQL"]
    decide(client, approval["id"], decision="allow", answers={"Which database?": "PostgreSQL"})
    done = client.wait_terminal(task["id"])
    assert done["status"] == "completed"
    results = [r.last_tool_result for r in fake_api.requests_with_prompt("Which database?")]
    assert any(result and '"Which database?"="PostgreSQL"' in result for result in results)


def test_an_unanswered_request_expires_and_the_task_timeout_waits_meanwhile(client, workdir):
    session = client.open_session(workdir, approvals="ask", approval_timeout_s=3)
    # The approval waits 3 s; the task may work for 2 s: only Claude's time counts.
    task = client.submit(session["id"], "[[bash: echo late > late.txt]]", timeout_s=2)
    approval = pending_of(client, task["id"])
    done = client.wait_terminal(task["id"])
    assert done["status"] == "completed", done
    expired = client.get(f"/approvals/{approval['id']}").json()
    assert (expired["status"], expired["decided_by"]) == ("expired", "timeout")
    assert "No one answered" in expired["message"]
    assert "No one answered" in done["output"]
    assert not (Path(workdir) / "late.txt").exists()


def test_deciding_twice_an_unknown_id_and_bad_bodies_are_refused(client, asking):
    task = client.submit(asking["id"], "[[bash: echo x > x.txt]]")
    approval = pending_of(client, task["id"])
    url = f"/approvals/{approval['id']}"
    bad = {
        "decision": ({"decision": "maybe"}, "decision"),
        "missing": ({}, "decision"),
        "unknown": ({"decision": "allow", "because": 1}, "because"),
        "input": ({"decision": "allow", "updated_input": "rm"}, "updated_input"),
        "remember": ({"decision": "allow", "remember": "yes"}, "remember"),
        "deny with input": ({"decision": "deny", "updated_input": {}}, "updated_input"),
        "answers for a tool": ({"decision": "allow", "answers": {"q": "a"}}, "answers"),
        "remember changed": (
            {"decision": "allow", "remember": True, "updated_input": {"command": "ls"}},
            "remember",
        ),
    }
    for name, (body, field) in bad.items():
        response = client.post(url, json=body)
        error_of(response, 400, "invalid_request")
        assert response.json()["error"]["details"]["field"] == field, name
    error_of(
        client.post(url, data=b"{", headers={"Content-Type": "application/json"}),
        400,
        "invalid_request",
    )
    assert client.get(url).json()["status"] == "pending"  # nothing bad reached it

    decide(client, approval["id"], decision="allow")
    again = client.post(url, json={"decision": "deny"})
    assert "already allowed" in error_of(again, 409, "approval_decided")
    # Decided is decided, whatever else the body gets wrong.
    misfit = client.post(url, json={"decision": "allow", "answers": {"q": "a"}})
    error_of(misfit, 409, "approval_decided")
    error_of(client.get("/approvals/nope"), 404, "not_found")
    error_of(client.post("/approvals/nope", json={"decision": "allow"}), 404, "not_found")
    error_of(client.get("/approvals", params={"status": "maybe"}), 400, "invalid_request")
    error_of(client.get("/approvals", params={"session_id": "nope"}), 404, "session_not_found")
    error_of(client.get("/approvals", params={"task_id": "nope"}), 404, "task_not_found")
    assert client.wait_terminal(task["id"])["status"] == "completed"


def test_a_question_needs_answers_to_its_own_questions(client, asking):
    task = client.submit(asking["id"], "[[ask: Ship it? | Yes | No]]")
    approval = pending_of(client, task["id"])
    url = f"/approvals/{approval['id']}"
    response = client.post(url, json={"decision": "allow"})
    assert "required" in error_of(response, 400, "invalid_request")
    response = client.post(url, json={"decision": "allow", "answers": {"Ship?": "Yes"}})
    error_of(response, 400, "invalid_request")
    assert response.json()["error"]["details"]["field"] == "answers.Ship?"
    response = client.post(url, json={"decision": "allow", "remember": True, "answers": {}})
    error_of(response, 400, "invalid_request")
    decide(client, approval["id"], decision="deny", message="Not yet.")
    assert client.wait_terminal(task["id"])["status"] == "completed"


def test_cancelling_a_task_that_waits_expires_its_approval(client, asking):
    task = client.submit(asking["id"], "[[bash: echo never > never.txt]]")
    approval = pending_of(client, task["id"])
    started = time.monotonic()
    cancelled = client.delete(f"/tasks/{task['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert time.monotonic() - started < 15
    assert cancelled.json()["awaiting_approval"] is None
    expired = client.get(f"/approvals/{approval['id']}").json()
    assert (expired["status"], expired["decided_by"]) == ("expired", "system")
    events = client.get(f"/tasks/{task['id']}/events").json()["data"]
    types = [e["type"] for e in events]
    # Expired as the cancel began, before the interrupted turn's last words and its end.
    assert types.index("approval_requested") < types.index("approval_decided") < len(types) - 1
    assert types[-1] == "status"
    error_of(
        client.post(f"/approvals/{approval['id']}", json={"decision": "allow"}),
        409,
        "approval_decided",
    )
    # The session goes on: its next task runs.
    after = client.submit(asking["id"], "[[say: still here]]")
    assert client.wait_terminal(after["id"])["output"] == "still here"


def test_closing_the_session_expires_what_waits(client, asking):
    task = client.submit(asking["id"], "[[bash: echo closed > closed.txt]]")
    approval = pending_of(client, task["id"])
    closed = client.delete(f"/sessions/{asking['id']}")
    assert closed.json()["status"] == "closed"
    assert client.get(f"/tasks/{task['id']}").json()["status"] == "cancelled"
    expired = client.get(f"/approvals/{approval['id']}").json()
    assert (expired["status"], expired["decided_by"]) == ("expired", "system")


def test_approvals_off_refuses_as_in_version_1(client, workdir, fake_api):
    session = client.open_session(workdir)
    assert session["approvals"] == "off" and session["approval_rules"] == []
    done = client.wait_terminal(client.submit(session["id"], "[[bash: echo off > off.txt]]")["id"])
    assert done["status"] == "completed" and not (Path(workdir) / "off.txt").exists()
    assert client.get("/approvals").json()["data"] == []
    offered = {tool["name"] for r in fake_api.conversation_requests() for tool in r.body["tools"]}
    assert "AskUserQuestion" not in offered  # the CLI offers it only when it can ask us


def test_session_fields_are_checked(client, workdir):
    for body, field in (
        ({"approvals": "sometimes"}, "approvals"),
        ({"approval_timeout_s": 0}, "approval_timeout_s"),
        ({"approval_timeout_s": 604_801}, "approval_timeout_s"),
    ):
        response = client.post("/sessions", json={"workdir": workdir, **body})
        error_of(response, 400, "invalid_request")
        assert response.json()["error"]["details"]["field"] == field
    session = client.open_session(workdir, approvals="ask", approval_timeout_s=604_800)
    assert session["approval_timeout_s"] == 604_800


def test_lists_filter_and_page(client, workdir, asking):
    tasks = [client.submit(asking["id"], f"[[bash: echo {n} > n{n}.txt]]") for n in range(3)]
    seen = []
    for task in tasks:  # one at a time: the session runs its tasks in order
        approval = pending_of(client, task["id"])
        seen.append(approval["id"])
        decide(client, approval["id"], decision="deny" if len(seen) == 2 else "allow")
        client.wait_terminal(task["id"])
    walked = client.walk("/approvals", session_id=asking["id"], limit=1, order="asc")
    assert [a["id"] for a in walked] == seen
    denied = client.get("/approvals", params={"status": "denied"}).json()["data"]
    assert [a["id"] for a in denied] == [seen[1]]
    both = client.walk("/approvals", status="allowed, denied", limit=2)
    assert [a["id"] for a in both] == seen[::-1]
    assert json.loads(json.dumps(walked))  # plain JSON all the way down
