"""Bad input through HTTP: the right status and code, one clear sentence, nothing stored."""

from __future__ import annotations

import json

import pytest
import requests

from aicli.testing.waiting import wait_for
from tests.http_server import Client, error_of, serving

pytest_plugins = ("tests.http_fixtures",)


@pytest.fixture
def session(client, workdir) -> dict:
    return client.open_session(workdir)


@pytest.fixture
def stored(client):
    """Fails the test if a rejected request left any session or task behind."""

    def snapshot() -> tuple[list, list]:
        return client.walk("/sessions", limit=200), client.walk("/tasks", limit=200)

    before = snapshot()
    yield
    assert snapshot() == before


def raw_post(client: Client, path: str, data: bytes | str, content_type: str | None):
    headers = {} if content_type is None else {"Content-Type": content_type}
    return client.post(path, data=data, headers=headers)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ("{", "not valid JSON"),
        ('{"workdir": "/tmp",}', "not valid JSON"),
        ('{"command": NaN}', "not valid JSON"),
        # Valid JSON, but past any double: not a "surrogate escape", as it was once called.
        ('{"timeout_s": 1e400}', "number 1e400 is out of range"),
        ('{"metadata": {"a": -2E+999}}', "number -2E+999 is out of range"),
        ("", "empty"),
        ("   ", "empty"),
        ("[]", "not an array"),
        ('"text"', "not a string"),
        ("42", "not a number"),
        ("null", "not null"),
        (b"\xff\xfe{}", "UTF-8"),
    ],
)
def test_bodies_that_are_not_json_objects_are_400(client, session, stored, data, words):
    for path in ("/sessions", f"/sessions/{session['id']}/tasks"):
        message = error_of(raw_post(client, path, data, "application/json"), 400, "invalid_request")
        assert words in message


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "'workdir' is required"),
        ({"workdir": 7}, "'workdir' must be a string, not a number"),
        ({"workdir": "/definitely/not/here"}, "is not an existing directory"),
        ({"workdir": "WORKDIR", "permission_mode": "root"}, "'permission_mode' must be one of"),
        ({"workdir": "WORKDIR", "max_turns": "3"}, "'max_turns' must be an integer >= 1"),
        ({"workdir": "WORKDIR", "max_turns": 0}, "'max_turns' must be an integer >= 1"),
        ({"workdir": "WORKDIR", "allowed_tools": "Bash"}, "'allowed_tools' must be an array"),
        ({"workdir": "WORKDIR", "metadata": {"n": 1}}, "'metadata.n' must be a string"),
        ({"workdir": "WORKDIR", "cwd": "/"}, "Unknown session field 'cwd'"),
    ],
)
def test_bad_session_bodies_are_400(client, workdir, stored, body, words):
    body = {key: workdir if value == "WORKDIR" else value for key, value in body.items()}
    message = error_of(client.post("/sessions", json=body), 400, "invalid_request")
    assert words in message


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "'command' is required"),
        ({"command": 5}, "'command' must be a string, not a number"),
        ({"command": ""}, "'command' must not be empty"),
        ({"command": "   "}, "'command' must not be empty"),
        ({"command": "x" * 100_001}, "'command' has 100001 characters"),
        ({"command": "hi", "timeout_s": 0}, "'timeout_s' must be a number of seconds > 0"),
        ({"command": "hi", "timeout_s": "10"}, "'timeout_s' must be a number of seconds > 0"),
        ({"command": "hi", "timeout_s": True}, "'timeout_s' must be a number of seconds > 0"),
        ({"command": "hi", "metadata": ["a"]}, "'metadata' must be an object"),
        ({"command": "hi", "prompt": "hi"}, "Unknown task field 'prompt'"),
    ],
)
def test_bad_task_bodies_are_400(client, session, stored, body, words):
    response = client.post(f"/sessions/{session['id']}/tasks", json=body)
    assert words in error_of(response, 400, "invalid_request")


def test_a_bad_idempotency_key_is_400(client, session, stored):
    response = client.post(
        f"/sessions/{session['id']}/tasks",
        json={"command": "hi"},
        headers={"Idempotency-Key": "x" * 256},
    )
    assert "Idempotency-Key" in error_of(response, 400, "invalid_request")


def test_unknown_ids_are_404(client, session, stored):
    missing = "0123456789abcdef"
    for method, path, code in [
        ("GET", f"/sessions/{missing}", "session_not_found"),
        ("DELETE", f"/sessions/{missing}", "session_not_found"),
        ("GET", f"/sessions/{missing}/tasks", "session_not_found"),
        ("GET", f"/tasks?session_id={missing}", "session_not_found"),
        ("GET", f"/tasks/{missing}", "task_not_found"),
        ("GET", f"/tasks/{missing}?wait=1", "task_not_found"),
        ("DELETE", f"/tasks/{missing}", "task_not_found"),
        ("GET", f"/tasks/{missing}/events", "task_not_found"),
    ]:
        message = error_of(client.request(method, path), 404, code)
        assert f"'{missing}'" in message
    response = client.post(f"/sessions/{missing}/tasks", json={"command": "hi"})
    assert error_of(response, 404, "session_not_found") == f"No session with id '{missing}'."


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/tasks?status=done", "'status' has unknown value 'done'"),
        ("/tasks?status=", "'status' must be a comma list"),
        ("/sessions?status=pending", "'status' has unknown value 'pending'"),
        ("/tasks?order=up", "'order' must be 'desc' or 'asc'"),
        ("/tasks?limit=0", "'limit' must be an integer from 1 to 200"),
        ("/tasks?limit=201", "'limit' must be an integer from 1 to 200"),
        ("/sessions?limit=many", "'limit' must be an integer from 1 to 200"),
        ("/tasks?cursor=not-a-cursor", "'cursor' is not a cursor"),
        ("/sessions?cursor=%21%21", "'cursor' is not a cursor"),
        ("/tasks?created_after=yesterday", "'created_after' must be an RFC 3339 time"),
        ("/tasks?created_before=2026-01-01T00:00:00", "'created_before' must be an RFC 3339"),
        ("/tasks?created_after=2026-02-30T00:00:00Z", "'created_after' is not a valid date"),
        ("/tasks?stauts=failed", "Unknown query parameter 'stauts'"),
        ("/tasks?limit=1&limit=2", "'limit' is given more than once"),
    ],
)
def test_bad_filters_are_400(client, stored, path, words):
    assert words in error_of(client.get(path), 400, "invalid_request")


def test_bad_task_parameters_are_400(client, session):
    task = client.submit(session["id"], "[[say: hi]]")
    for path, words in [
        (f"/tasks/{task['id']}?wait=61", "'wait' must be a number of seconds from 0 to 60"),
        (f"/tasks/{task['id']}?wait=-1", "'wait' must be a number of seconds from 0 to 60"),
        (f"/tasks/{task['id']}/events?after=-1", "'after' must be an integer >= 0"),
        (f"/tasks/{task['id']}/events?since=1", "Unknown query parameter 'since'"),
        (f"/sessions/{session['id']}/tasks?session_id=x", "Unknown query parameter"),
    ]:
        assert words in error_of(client.get(path), 400, "invalid_request")
    response = client.get(
        f"/tasks/{task['id']}/events",
        headers={"Accept": "text/event-stream", "Last-Event-ID": "three"},
    )
    assert "'Last-Event-ID'" in error_of(response, 400, "invalid_request")
    client.wait_terminal(task["id"])


def test_cancel_of_a_finished_task_is_409(client, session):
    task = client.submit(session["id"], "[[say: done]]")
    done = client.wait_terminal(task["id"])
    message = error_of(client.delete(f"/tasks/{task['id']}"), 409, "task_not_cancellable")
    assert message == f"Task '{task['id']}' is already completed and cannot be cancelled."
    assert client.get(f"/tasks/{task['id']}").json() == done


def test_too_many_pending_tasks_is_429(make_runtime, workdir):
    with serving(make_runtime(max_pending_per_session=1)) as url:
        client = Client(url)
        session = client.open_session(workdir)
        first = client.submit(session["id"], "[[slow: 3]] [[say: one]]")
        wait_for(
            lambda: client.get(f"/tasks/{first['id']}").json()["status"] == "running",
            timeout=30,
            what="the first task to run",
        )
        client.submit(session["id"], "[[say: two]]")
        response = client.post(f"/sessions/{session['id']}/tasks", json={"command": "three"})
        error_of(response, 429, "too_many_requests")
        assert int(response.headers["Retry-After"]) >= 1


def test_bodies_over_the_limit_are_413(client, session, stored):
    path = f"/sessions/{session['id']}/tasks"
    big = json.dumps({"command": "x" * (1024 * 1024)})
    assert "1048576 bytes" in error_of(
        raw_post(client, path, big, "application/json"), 413, "payload_too_large"
    )

    def chunked():
        # No Content-Length: the real number of bytes read is what gets capped.
        yield b'{"command": "'
        for _ in range(17):
            yield b"x" * 65536
        yield b'"}'

    response = client.post(path, data=chunked(), headers={"Content-Type": "application/json"})
    assert "Content-Length" not in response.request.headers
    error_of(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_bodies_that_are_not_json_are_415(client, workdir, stored, content_type):
    body = json.dumps({"workdir": workdir})
    message = error_of(
        raw_post(client, "/sessions", body, content_type), 415, "unsupported_media_type"
    )
    assert content_type in message


def test_json_with_a_charset_is_accepted_and_without_a_content_type_is_415(client, workdir):
    body = json.dumps({"workdir": workdir})
    assert raw_post(client, "/sessions", body, "application/json; charset=utf-8").status_code == 201
    message = error_of(raw_post(client, "/sessions", body, None), 415, "unsupported_media_type")
    assert "none" in message


def test_unknown_routes_and_methods_get_json_errors(client, session):
    message = error_of(client.get("/nowhere"), 404, "not_found")
    assert message == "No route matches GET /nowhere."
    error_of(client.get(f"/sessions/{session['id']}/files"), 404, "not_found")

    for method, path in [
        ("PUT", "/sessions"),
        ("PATCH", f"/sessions/{session['id']}"),
        ("POST", "/tasks"),
        ("DELETE", "/healthz"),
        ("POST", "/openapi.json"),
    ]:
        response = client.request(method, path)
        message = error_of(response, 405, "method_not_allowed")
        assert method in message and "GET" in response.headers["Allow"]


def test_an_internal_error_is_a_500_without_a_traceback(runtime, base_url, monkeypatch, caplog):
    def broken(task_id, **_):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(runtime, "get_task", broken)
    response = requests.get(f"{base_url}/tasks/abc", timeout=10)
    message = error_of(response, 500, "internal_error")
    assert "secret" not in response.text and "Traceback" not in response.text
    assert "log" in message
    assert "secret internals" in caplog.text
