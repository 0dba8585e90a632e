"""Approvals with many users, over real HTTP: each sees and decides only its own, admins all.

Alice's session asks before tools; Bob, another user, must not learn that her
approvals exist (404 as for an unknown id, never 403 nor 409) nor decide them;
an admin sees and decides anyone's, and ``decided_by`` names who did. Every
response is also checked against the served OpenAPI document (``Client``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aicli.testing.waiting import wait_for
from tests.http_server import Client, create_principal, error_of, same_404, serving

ROOT_TOKEN = "root-token-for-approval-tests"
WRITE = "[[bash: echo hi > f.txt]]"
UNKNOWN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def world(make_runtime, tmp_path: Path):
    """A served runtime with users alice and bob (each with a workspace root) and an admin."""
    root = tmp_path / "ws"
    runtime = make_runtime(api_token=ROOT_TOKEN, workspace_root=str(root))
    (root / "alice").mkdir(parents=True)
    (root / "bob").mkdir()
    with serving(runtime) as url:
        root_client = Client(url, token=ROOT_TOKEN)
        people = {}
        for name, fields in [
            ("alice", {"workspace_root": str(root / "alice")}),
            ("bob", {"workspace_root": str(root / "bob")}),
            ("admin", {"role": "admin"}),
        ]:
            made = create_principal(root_client, name, **fields)
            people[name] = (made, Client(url, token=made["token"]))
        yield people, root


def workdir_of(root: Path, name: str, subdir: str = "") -> str:
    path = root / name / subdir
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def ask_to_write(client: Client, workdir: str) -> tuple[dict, dict, dict]:
    """A session that asks, a task whose Bash write waits, and its pending approval."""
    session = client.open_session(workdir, approvals="ask")
    task = client.submit(session["id"], WRITE)

    def waiting() -> str | None:
        return client.get(f"/tasks/{task['id']}").json()["awaiting_approval"]

    approval_id = wait_for(waiting, timeout=30, what="the task to wait for an approval")
    approval = client.get(f"/approvals/{approval_id}").json()
    assert approval["status"] == "pending" and approval["task_id"] == task["id"]
    assert approval["session_id"] == session["id"] and approval["tool_name"] == "Bash"
    return session, task, approval


def ids(items: list[dict]) -> list[str]:
    return [item["id"] for item in items]


def test_another_user_neither_sees_nor_decides_it_and_an_admin_does(world):
    people, root = world
    (alice_p, alice), (bob_p, bob), (admin_p, admin) = (
        people["alice"],
        people["bob"],
        people["admin"],
    )
    workdir = workdir_of(root, "alice")
    session, task, approval = ask_to_write(alice, workdir)
    aid = approval["id"]

    assert bob.walk("/approvals") == []
    assert bob.walk("/approvals", status="pending") == []
    assert bob.walk("/approvals", owner=bob_p["id"]) == []
    same_404(bob.get(f"/approvals/{aid}"), "not_found", bob.get(f"/approvals/{UNKNOWN}"))
    for body in ({"decision": "allow"}, {"decision": "deny", "message": "no"}):
        same_404(
            bob.post(f"/approvals/{aid}", json=body),
            "not_found",
            bob.post(f"/approvals/{UNKNOWN}", json=body),
        )
    same_404(
        bob.get("/approvals", params={"session_id": session["id"]}),
        "session_not_found",
        bob.get("/approvals", params={"session_id": UNKNOWN}),
    )
    same_404(
        bob.get("/approvals", params={"task_id": task["id"]}),
        "task_not_found",
        bob.get("/approvals", params={"task_id": UNKNOWN}),
    )
    error_of(bob.get("/approvals", params={"owner": alice_p["id"]}), 403, "forbidden")
    # A body that could only be refused by looking at the approval is still refused as unknown.
    answers = {"decision": "allow", "answers": {"Which color?": "Red"}}
    same_404(
        bob.post(f"/approvals/{aid}", json=answers),
        "not_found",
        bob.post(f"/approvals/{UNKNOWN}", json=answers),
    )
    # Nothing Bob did moved it.
    assert alice.get(f"/approvals/{aid}").json() == approval
    waiting = alice.get(f"/tasks/{task['id']}").json()
    assert waiting["status"] == "running" and waiting["awaiting_approval"] == aid

    assert ids(admin.walk("/approvals")) == [aid]
    assert ids(admin.walk("/approvals", owner=alice_p["id"], status="pending")) == [aid]
    assert admin.walk("/approvals", owner=bob_p["id"]) == []
    assert ids(admin.walk("/approvals", session_id=session["id"])) == [aid]
    error_of(admin.get("/approvals", params={"session_id": UNKNOWN}), 404, "session_not_found")
    error_of(admin.get("/approvals", params={"task_id": UNKNOWN}), 404, "task_not_found")
    assert admin.get(f"/approvals/{aid}").json() == approval
    decided = admin.post(f"/approvals/{aid}", json={"decision": "allow"})
    assert decided.status_code == 200, decided.text
    allowed = decided.json()
    assert allowed["status"] == "allowed" and allowed["decided_by"] == admin_p["id"]
    assert allowed["decided_at"] is not None
    done = alice.wait_terminal(task["id"])
    assert done["status"] == "completed" and done["awaiting_approval"] is None
    assert (Path(workdir) / "f.txt").read_text() == "hi\n"
    assert alice.get(f"/approvals/{aid}").json() == allowed

    # Decided, it still does not exist for Bob: 404, not the 409 its owner would get.
    same_404(
        bob.post(f"/approvals/{aid}", json={"decision": "deny"}),
        "not_found",
        bob.post(f"/approvals/{UNKNOWN}", json={"decision": "deny"}),
    )
    error_of(alice.post(f"/approvals/{aid}", json={"decision": "deny"}), 409, "approval_decided")
    assert bob.walk("/approvals") == []


def test_the_owner_sees_and_decides_its_own_approval(world):
    people, root = world
    (alice_p, alice), (_, bob) = people["alice"], people["bob"]
    workdir = workdir_of(root, "alice")
    session, task, approval = ask_to_write(alice, workdir)
    aid = approval["id"]

    assert ids(alice.walk("/approvals")) == [aid]
    assert ids(alice.walk("/approvals", owner=alice_p["id"])) == [aid]
    assert ids(alice.walk("/approvals", session_id=session["id"], status="pending")) == [aid]
    assert ids(alice.walk("/approvals", task_id=task["id"])) == [aid]
    answer = alice.post(f"/approvals/{aid}", json={"decision": "deny", "message": "Not here."})
    assert answer.status_code == 200, answer.text
    denied = answer.json()
    assert denied["status"] == "denied" and denied["decided_by"] == alice_p["id"]
    assert denied["message"] == "Not here." and denied["decided_at"] is not None
    # A denied request tells Claude, and the turn goes on.
    done = alice.wait_terminal(task["id"])
    assert done["status"] == "completed" and done["awaiting_approval"] is None
    assert not (Path(workdir) / "f.txt").exists()
    assert alice.walk("/approvals", status="pending") == []
    assert alice.walk("/approvals", status="denied") == [denied]
    again = alice.post(f"/approvals/{aid}", json={"decision": "allow"})
    error_of(again, 409, "approval_decided")
    assert again.json()["error"]["details"]["decided_by"] == alice_p["id"]
    assert bob.walk("/approvals") == []


def test_a_users_list_filters_by_status_and_pages(world):
    people, root = world
    (alice_p, alice), (_, bob), (_, admin) = people["alice"], people["bob"], people["admin"]
    _, first_task, first = ask_to_write(alice, workdir_of(root, "alice", "one"))
    _, second_task, second = ask_to_write(alice, workdir_of(root, "alice", "two"))
    _, bob_task, bobs = ask_to_write(bob, workdir_of(root, "bob"))
    newest_first = [second["id"], first["id"]]

    page = alice.get("/approvals", params={"status": "pending", "limit": 1})
    assert page.status_code == 200, page.text
    body = page.json()
    assert ids(body["data"]) == [second["id"]]
    assert body["has_more"] is True and body["next_cursor"]
    rest = alice.get(
        "/approvals", params={"status": "pending", "limit": 1, "cursor": body["next_cursor"]}
    ).json()
    assert ids(rest["data"]) == [first["id"]]
    assert rest["has_more"] is False and rest["next_cursor"] is None
    assert ids(alice.walk("/approvals", status="pending", limit=1)) == newest_first
    assert ids(alice.walk("/approvals", limit=1, order="asc")) == newest_first[::-1]
    error_of(alice.get("/approvals", params={"cursor": "not-a-cursor"}), 400, "invalid_request")
    error_of(alice.get("/approvals", params={"status": "maybe"}), 400, "invalid_request")

    answer = alice.post(f"/approvals/{first['id']}", json={"decision": "allow"})
    assert answer.status_code == 200, answer.text
    assert alice.wait_terminal(first_task["id"])["status"] == "completed"
    assert ids(alice.walk("/approvals", status="pending", limit=1)) == [second["id"]]
    assert ids(alice.walk("/approvals", status="allowed")) == [first["id"]]
    assert ids(alice.walk("/approvals", status="allowed,pending", limit=1)) == newest_first
    assert alice.walk("/approvals", status="denied,expired") == []
    assert ids(bob.walk("/approvals", status="pending")) == [bobs["id"]]
    everyone = admin.walk("/approvals", status="pending", limit=1)
    assert ids(everyone) == [bobs["id"], second["id"]]
    assert ids(admin.walk("/approvals", owner=alice_p["id"], limit=1)) == newest_first

    # Cancelling a task ends its pending approval: expired, decided by the system.
    assert alice.delete(f"/tasks/{second_task['id']}").json()["status"] == "cancelled"
    expired = alice.get(f"/approvals/{second['id']}").json()
    assert expired["status"] == "expired" and expired["decided_by"] == "system"
    assert bob.delete(f"/tasks/{bob_task['id']}").json()["status"] == "cancelled"
    assert admin.walk("/approvals", status="pending") == []
