"""Many users on one service: each sees only its own work, admins see all, over real HTTP.

Two users and an admin call every route of the API with their own ids and with
each other's. Anyone else's id answers exactly like an unknown one (404, the
same body but for the id), lists leave others' work out, and an admin may
narrow lists by owner. Every response is also checked against the served
OpenAPI document (``Client`` does that).
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import pytest
import requests

from aicli.contract import PrincipalCreate
from aicli.testing.waiting import wait_for
from tests.http_server import Client, create_principal, error_of, same_404, serving

pytest_plugins = ("tests.http_fixtures",)

ROOT_TOKEN = "root-token-for-tests"
SLOW = "[[slow: 30]] [[say: late]]"


@pytest.fixture
def world(make_runtime, tmp_path: Path):
    root = tmp_path / "ws"
    (root / "ana").mkdir(parents=True)
    (root / "bo").mkdir()
    runtime = make_runtime(api_token=ROOT_TOKEN, workspace_root=str(root))
    with serving(runtime) as url:
        admin = Client(url, token=ROOT_TOKEN)
        users = {}
        for name in ("ana", "bo"):
            made = create_principal(admin, name, workspace_root=str(root / name))
            users[name] = (made, Client(url, token=made["token"]))
        yield runtime, url, admin, users, root


def own_work(client: Client, workdir: Path) -> tuple[dict, dict]:
    session = client.open_session(str(workdir))
    task = client.wait_terminal(client.submit(session["id"], "[[say: mine]]")["id"])
    return session, task


def test_a_user_never_sees_lists_watches_cancels_or_closes_anothers_work(world):
    _, _, admin, users, root = world
    (ana_p, ana), (bo_p, bo) = users["ana"], users["bo"]
    session, task = own_work(ana, root / "ana")
    running = ana.submit(session["id"], SLOW)
    assert session["owner"] == ana_p["id"]

    sid, tid = session["id"], task["id"]
    for method, path, code, unknown in [
        ("GET", f"/sessions/{sid}", "session_not_found", "/sessions/0123456789abcdef"),
        ("GET", f"/sessions/{sid}/tasks", "session_not_found", "/sessions/0123456789abcdef/tasks"),
        ("GET", f"/tasks/{tid}", "task_not_found", "/tasks/0123456789abcdef"),
        ("GET", f"/tasks/{tid}?wait=1", "task_not_found", "/tasks/0123456789abcdef?wait=1"),
        ("GET", f"/tasks/{tid}/events", "task_not_found", "/tasks/0123456789abcdef/events"),
        (
            "GET",
            f"/tasks?session_id={sid}",
            "session_not_found",
            "/tasks?session_id=0123456789abcdef",
        ),
        ("DELETE", f"/tasks/{running['id']}", "task_not_found", "/tasks/0123456789abcdef"),
        ("DELETE", f"/sessions/{sid}", "session_not_found", "/sessions/0123456789abcdef"),
    ]:
        same_404(bo.request(method, path), code, bo.request(method, unknown))
    stream = bo.get(f"/tasks/{tid}/events", headers={"Accept": "text/event-stream"})
    error_of(stream, 404, "task_not_found")
    submit = bo.post(f"/sessions/{sid}/tasks", json={"command": "[[say: intruder]]"})
    error_of(submit, 404, "session_not_found")
    assert bo.get("/sessions").json()["data"] == []
    assert bo.get("/tasks").json()["data"] == []
    # Nothing bo did touched ana's work.
    assert ana.get(f"/tasks/{running['id']}").json()["status"] in ("pending", "running")
    assert ana.get(f"/sessions/{sid}").json()["status"] != "closed"
    assert [t["id"] for t in ana.walk("/tasks")] == [running["id"], tid]
    assert ana.delete(f"/tasks/{running['id']}").json()["status"] == "cancelled"
    # A user may name only itself as owner.
    assert ana.get("/tasks", params={"owner": ana_p["id"]}).status_code == 200
    error_of(ana.get("/tasks", params={"owner": bo_p["id"]}), 403, "forbidden")


def test_an_admin_sees_everyones_work_and_can_filter_by_owner(world):
    _, _, admin, users, root = world
    (ana_p, ana), (bo_p, bo) = users["ana"], users["bo"]
    a_session, a_task = own_work(ana, root / "ana")
    b_session, b_task = own_work(bo, root / "bo")
    assert admin.get(f"/tasks/{a_task['id']}").status_code == 200
    assert {s["id"] for s in admin.walk("/sessions")} == {a_session["id"], b_session["id"]}
    only_bo = admin.walk("/sessions", owner=bo_p["id"])
    assert [s["id"] for s in only_bo] == [b_session["id"]]
    assert [t["id"] for t in admin.walk("/tasks", owner=ana_p["id"])] == [a_task["id"]]
    assert admin.get("/me").json()["id"] == "root"
    assert {p["id"] for p in admin.walk("/principals")} == {ana_p["id"], bo_p["id"]}


def test_revoked_tokens_are_refused_at_once(world):
    _, url, admin, users, root = world
    (ana_p, ana) = users["ana"]
    assert ana.get("/me").json()["id"] == ana_p["id"]
    assert admin.delete(f"/principals/{ana_p['id']}").json()["revoked_at"]
    error_of(ana.get("/me"), 401, "unauthorized")
    error_of(ana.get("/sessions"), 401, "unauthorized")
    error_of(requests.get(f"{url}/sessions", timeout=10), 401, "unauthorized")
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200


def test_a_users_workdir_outside_its_own_root_is_refused(world):
    _, _, _, users, root = world
    _, ana = users["ana"]
    refused = ana.post("/sessions", json={"workdir": str(root / "bo")})
    assert "outside the workspace root" in error_of(refused, 400, "invalid_request")
    assert ana.post("/sessions", json={"workdir": str(root / "ana")}).status_code == 201


def test_limits_give_429_and_a_spent_budget_402(world, monkeypatch):
    runtime, url, admin, _, root = world
    made = admin.post(
        "/principals",
        json={
            "name": "capped",
            "limits": {"max_sessions": 1, "max_pending_per_session": 1, "budget_usd": 1e-9},
        },
    ).json()
    capped = Client(url, token=made["token"])
    session = capped.open_session(str(root / "ana"))
    message = error_of(
        capped.post("/sessions", json={"workdir": str(root)}), 429, "too_many_requests"
    )
    assert "1 open sessions" in message
    first = capped.submit(session["id"], SLOW)
    refused = capped.post(f"/sessions/{session['id']}/tasks", json={"command": "[[say: 2]]"})
    error_of(refused, 429, "too_many_requests")
    capped.delete(f"/tasks/{first['id']}")
    done = capped.wait_terminal(capped.submit(session["id"], "[[say: costs]]")["id"])
    assert done["status"] == "completed" and done["cost_usd"] > 0
    spent = capped.post(f"/sessions/{session['id']}/tasks", json={"command": "[[say: 3]]"})
    assert "budget" in error_of(spent, 402, "budget_exceeded")
    assert capped.get("/me").json()["total_cost_usd"] >= done["cost_usd"]


def test_pending_tasks_fail_once_the_budget_is_spent(world):
    _, url, admin, _, root = world
    made = admin.post("/principals", json={"name": "thrifty", "limits": {"budget_usd": 1e-9}})
    thrifty = Client(url, token=made.json()["token"])
    session = thrifty.open_session(str(root / "ana"))
    first = thrifty.submit(session["id"], "[[slow: 1]] [[say: first]]")
    queued = thrifty.submit(session["id"], "[[say: never]]")
    assert thrifty.wait_terminal(first["id"])["status"] == "completed"
    failed = thrifty.wait_terminal(queued["id"])
    assert failed["status"] == "failed" and "budget" in failed["error"]


def test_no_token_is_stored_or_logged_in_clear(world, caplog):
    runtime, _, admin, users, root = world
    caplog.set_level(logging.DEBUG)
    (ana_p, ana) = users["ana"]
    own_work(ana, root / "ana")
    tokens = [ROOT_TOKEN.encode()] + [u[0]["token"].encode() for u in users.values()]
    assert not any(token.decode() in caplog.text for token in tokens)
    database = Path(runtime.settings.database_url.removeprefix("sqlite:///"))
    raw = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    assert not any(token in raw for token in tokens[1:])
    access = [r for r in caplog.records if r.name == "aicli.http.access"]
    assert any(getattr(r, "principal", None) == ana_p["id"] for r in access)


def test_a_wrong_token_and_a_right_tokens_404_take_similar_time(world):
    _, url, _, users, _ = world
    ana_p, _ = users["ana"]
    right, wrong = ana_p["token"], "aicli_" + "x" * 43
    http = requests.Session()

    def timed(token: str) -> float:
        samples = []
        for _ in range(40):
            started = time.perf_counter()
            http.get(
                f"{url}/tasks/0123456789abcdef",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    timed(right), timed(wrong)  # warm both paths
    right_404, wrong_401 = timed(right), timed(wrong)
    # Both hash the token and look it up; the 404 then costs one indexed read more. Not a
    # timing goal (the note reports the medians): a sanity bound, loose for a shared machine.
    assert min(right_404, wrong_401) * 3 > max(right_404, wrong_401), (right_404, wrong_401)


def test_an_open_service_closes_once_a_principal_exists(make_runtime, tmp_path):
    runtime = make_runtime()  # no token configured: open, as in version 1
    with serving(runtime) as url:
        assert requests.get(f"{url}/sessions", timeout=10).status_code == 200
        made = runtime.store.principals.create(PrincipalCreate(name="late"))  # as the CLI does

        def closed() -> bool:
            return requests.get(f"{url}/sessions", timeout=10).status_code == 401

        wait_for(closed, timeout=5, what="the service to ask for a token")
        mine = requests.get(
            f"{url}/me", headers={"Authorization": f"Bearer {made.token}"}, timeout=10
        )
        assert mine.json()["id"] == made.id
