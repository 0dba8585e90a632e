"""Approvals across restarts: real ``aicli serve`` processes, killed or stopped, on one database.

A request that waits for a person when the server dies ends with it: the
restart fails its task (the restart rule) and expires the approval (decided by
the system), so nobody can allow a tool use whose turn is gone; a clean stop
cancels the task and expires it the same way. A decided approval is stored
like a task: a restart lists it with its decision.
"""

from __future__ import annotations

import signal
from pathlib import Path

import psutil

from aicli.testing.waiting import wait_for
from tests.http_server import Client, error_of
from tests.serve_process import aicli_children

pytest_plugins = ("tests.serve_fixtures",)

WRITE = "[[bash: echo hi > f.txt]]"


def still_running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` that still run (not gone, not a zombie, not a reused pid)."""
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            pass
    return running


def ids(items: list[dict]) -> list[str]:
    return [item["id"] for item in items]


def pending_approval(client: Client, task_id: str, command: str = "echo hi > f.txt") -> dict:
    """The task's approval, once the CLI's request for it is listed as pending."""

    def listed() -> list[dict]:
        page = client.get("/approvals", params={"status": "pending"})
        assert page.status_code == 200, page.text
        return [a for a in page.json()["data"] if a["task_id"] == task_id]

    [approval] = wait_for(listed, timeout=30, what="a pending approval to be listed")
    assert approval["kind"] == "tool" and approval["tool_name"] == "Bash"
    assert approval["input"]["command"] == command
    assert approval["decided_at"] is None and approval["decided_by"] is None
    return approval


def test_a_pending_approval_expires_when_the_server_is_killed(serve, database_url, workdir):
    server = serve()
    client = Client(server.url)
    session = client.open_session(workdir, approvals="ask")
    task = client.submit(session["id"], WRITE)
    approval = pending_approval(client, task["id"])
    waiting = client.get(f"/tasks/{task['id']}").json()
    assert waiting["status"] == "running" and waiting["awaiting_approval"] == approval["id"]
    old_children = aicli_children(database_url)
    assert old_children, "the session's Claude CLI carries the database's mark"

    server.signal(signal.SIGKILL)
    server.wait(10)

    server = serve()
    client = Client(server.url)
    # The restart ends the old run's processes (before it answers): nothing of that turn
    # can still run the tool.
    # (On PostgreSQL: once the old run's lease has ended.)
    wait_for(
        lambda: not still_running(old_children), timeout=30, what="the old run's CLI to be gone"
    )
    failed = wait_for(
        lambda: (t := client.get(f"/tasks/{task['id']}").json())["status"] == "failed" and t,
        timeout=30,
        what="the task to fail",
    )
    assert "server stopped while this task was running" in failed["error"]
    assert failed["awaiting_approval"] is None

    [expired] = client.walk("/approvals", task_id=task["id"])
    assert expired["id"] == approval["id"]
    assert expired["status"] == "expired" and expired["decided_by"] == "system"
    assert expired["decided_at"] is not None and expired["decided_at"] >= approval["created_at"]
    assert {k: expired[k] for k in ("input", "created_at", "session_id")} == {
        k: approval[k] for k in ("input", "created_at", "session_id")
    }
    assert client.get(f"/approvals/{approval['id']}").json() == expired
    assert client.walk("/approvals", status="pending") == []
    assert ids(client.walk("/approvals", status="expired")) == [approval["id"]]
    assert ids(client.walk("/approvals", session_id=session["id"])) == [approval["id"]]

    late = client.post(f"/approvals/{approval['id']}", json={"decision": "allow"})
    error_of(late, 409, "approval_decided")
    assert late.json()["error"]["details"]["status"] == "expired"
    assert late.json()["error"]["details"]["decided_by"] == "system"
    assert client.get(f"/approvals/{approval['id']}").json() == expired

    events = client.get(f"/tasks/{task['id']}/events").json()["data"]
    kinds = [e["type"] for e in events]
    assert kinds.index("approval_requested") < kinds.index("approval_decided")
    decided = next(e for e in events if e["type"] == "approval_decided")
    assert decided["data"]["approval"]["status"] == "expired"
    assert events[-1]["type"] == "status" and events[-1]["data"]["status"] == "failed"

    # The orphaned CLI saw its permission stream close and refused the tool itself; the
    # restart's reaper ended it. Either way the command never ran.
    assert not (Path(workdir) / "f.txt").exists()
    # The session goes on: idle, and its conversation takes the next task.
    assert client.get(f"/sessions/{session['id']}").json()["status"] == "idle"
    after = client.wait_terminal(client.submit(session["id"], "[[say: after the crash]]")["id"])
    assert after["status"] == "completed" and after["output"] == "after the crash"
    assert not (Path(workdir) / "f.txt").exists()


def test_decided_and_pending_approvals_after_a_clean_restart(serve, database_url, workdir):
    server = serve("--shutdown-grace", "1")
    client = Client(server.url)
    session = client.open_session(workdir, approvals="ask")
    task = client.submit(session["id"], WRITE)
    approval = pending_approval(client, task["id"])
    answer = client.post(f"/approvals/{approval['id']}", json={"decision": "allow"})
    assert answer.status_code == 200, answer.text
    allowed = answer.json()
    assert allowed["status"] == "allowed" and allowed["decided_by"] == "root"
    assert allowed["decided_at"] is not None
    done = client.wait_terminal(task["id"])
    assert done["status"] == "completed", done
    assert done["awaiting_approval"] is None
    assert (Path(workdir) / "f.txt").read_text() == "hi\n"
    # A second write waits for a person when the server is asked to stop.
    left = client.submit(session["id"], "[[bash: echo hi > g.txt]]")
    unanswered = pending_approval(client, left["id"], "echo hi > g.txt")

    server.signal(signal.SIGTERM)
    assert server.wait(30) == 0
    assert not aicli_children(database_url)

    server = serve()
    client = Client(server.url)
    assert client.walk("/approvals", task_id=task["id"]) == [allowed]
    assert client.walk("/approvals", status="allowed") == [allowed]
    assert client.get(f"/approvals/{approval['id']}").json() == allowed
    again = client.post(f"/approvals/{approval['id']}", json={"decision": "deny"})
    error_of(again, 409, "approval_decided")
    assert again.json()["error"]["details"]["status"] == "allowed"
    after = client.get(f"/tasks/{task['id']}").json()
    assert after["status"] == "completed" and after["output"] == done["output"]

    # Stopping the server ended the one nobody answered: its task cancelled, it expired.
    stopped = client.get(f"/tasks/{left['id']}").json()
    assert stopped["status"] == "cancelled" and "shut down" in stopped["error"]
    [expired] = client.walk("/approvals", task_id=left["id"])
    assert expired["id"] == unanswered["id"]
    assert expired["status"] == "expired" and expired["decided_by"] == "system"
    assert ids(client.walk("/approvals", session_id=session["id"])) == [
        unanswered["id"],
        approval["id"],
    ]
    error_of(
        client.post(f"/approvals/{unanswered['id']}", json={"decision": "allow"}),
        409,
        "approval_decided",
    )
    assert not (Path(workdir) / "g.txt").exists()
