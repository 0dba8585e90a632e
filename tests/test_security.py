"""Safe to expose: token, workspace root, limits, hostile input, what the Claude child inherits.

Already covered elsewhere, and not repeated here: a token guards every route
but ``/healthz`` (missing, wrong and right token, in ``test_http_service``);
``--api-token-file`` and the warning of ``aicli serve --host 0.0.0.0`` without
a token (``test_http_cli``); the default limits of 413, 415, 400 for a long
command and 429 with ``Retry-After`` for a full queue (``test_http_errors``).
Here the limits are set small, to show each setting is the one enforced.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
from collections.abc import Iterator

import psutil
import pytest
import requests

from aicli.actors.process_tree import MARK_VARIABLE
from aicli.errors import InvalidRequest
from aicli.runtime.principals import Principals
from aicli.settings import Settings
from aicli.testing.postgres import (
    fresh_schema_url,
)
from tests.http_server import Client, error_of, serving
from tests.serve_process import ServeProcess

pytest_plugins = ("tests.http_fixtures", "tests.storage_fixtures")

TOKEN = "t0ken-that-must-stay-secret"


def test_the_token_is_compared_in_constant_time():
    source = inspect.getsource(Principals.principal_for)
    assert "hmac.compare_digest(" in source
    assert "== root" not in source and "!= root" not in source


def test_the_token_from_the_environment_is_checked_before_anything_else(
    make_runtime, workdir, monkeypatch
):
    monkeypatch.setenv("AICLI_API_TOKEN", TOKEN)
    with serving(make_runtime(max_body_bytes=1024)) as url:
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
        # No hint of size, media type or route existence before the token is shown.
        for response in (
            requests.post(f"{url}/sessions", data="x" * 4096, timeout=10),
            requests.post(
                f"{url}/sessions", data="x", headers={"Content-Type": "text/plain"}, timeout=10
            ),
            requests.get(f"{url}/nowhere", timeout=10),
        ):
            error_of(response, 401, "unauthorized")
        refused = requests.post(f"{url}/sessions", json={"workdir": workdir}, timeout=10)
        error_of(refused, 401, "unauthorized")
        client = Client(url, token=TOKEN)
        assert client.walk("/sessions") == []
        assert client.open_session(workdir)["workdir"] == os.path.realpath(workdir)


def test_the_default_bind_is_loopback():
    assert Settings.resolve({}, environ={}).host == "127.0.0.1"


@pytest.mark.parametrize(
    ("file_text", "environ", "words"),
    [
        ("", {}, "is empty"),
        ("\n\n", {}, "is empty"),
        ("tok \nsecond line\n", {}, "whitespace"),
        (None, {"AICLI_API_TOKEN": "   "}, "blank"),
    ],
)
def test_serve_refuses_a_token_it_was_given_but_cannot_use(tmp_path, file_text, environ, words):
    overrides = {}
    if file_text is not None:
        (tmp_path / "token").write_text(file_text)
        overrides["api_token_file"] = str(tmp_path / "token")
    with pytest.raises(InvalidRequest, match=words):
        Settings.resolve(overrides, environ=environ)


@pytest.fixture
def confined(make_runtime, tmp_path) -> tuple[Client, str]:
    root = tmp_path / "root"
    (root / "inside").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "root-sibling").mkdir()
    (root / "link-out").symlink_to(tmp_path / "outside")
    (root / "link-in").symlink_to(root / "inside")
    with serving(make_runtime(workspace_root=str(root))) as url:
        yield Client(url), str(root)


@pytest.mark.parametrize(
    "escape",
    ["../outside", "inside/../../outside", "link-out", "link-out/.", "../root-sibling", "/"],
)
def test_a_workdir_cannot_escape_the_workspace_root(confined, escape):
    client, root = confined
    response = client.post("/sessions", json={"workdir": os.path.join(root, escape)})
    message = error_of(response, 400, "invalid_request")
    assert "'workdir'" in message and "outside the workspace root" in message
    assert response.json()["error"]["details"]["field"] == "workdir"
    assert client.walk("/sessions") == []


def test_paths_outside_the_root_are_refused_alike_whether_they_exist_or_not(confined):
    client, root = confined
    for path in ("/etc", "/no/such/dir"):
        message = error_of(client.post("/sessions", json={"workdir": path}), 400, "invalid_request")
        assert "outside the workspace root" in message


def test_workdirs_inside_the_root_are_stored_as_their_real_path(confined):
    client, root = confined
    inside = os.path.join(root, "inside")
    for given in (inside, os.path.join(root, "link-in"), os.path.join(root, "inside", "..")):
        stored = client.open_session(given)["workdir"]
        assert stored == os.path.realpath(given)
        assert os.path.commonpath([stored, os.path.realpath(root)]) == os.path.realpath(root)


def test_the_body_limit_is_the_configured_one(make_runtime, workdir):
    with serving(make_runtime(max_body_bytes=2048)) as url:
        client = Client(url)
        body = json.dumps({"workdir": workdir, "metadata": {"pad": "x" * 2048}})
        response = client.post("/sessions", data=body, headers={"Content-Type": "application/json"})
        assert "2048 bytes" in error_of(response, 413, "payload_too_large")
        assert client.open_session(workdir, metadata={"pad": "x" * 1024})


def test_the_command_limit_is_the_configured_one(make_runtime, workdir):
    with serving(make_runtime(max_command_chars=10)) as url:
        client = Client(url)
        schema = client.openapi.document["components"]["schemas"]["TaskSubmit"]
        assert schema["properties"]["command"]["maxLength"] == 10
        session = client.open_session(workdir)
        response = client.post(f"/sessions/{session['id']}/tasks", json={"command": "x" * 11})
        message = error_of(response, 400, "invalid_request")
        assert message == "'command' has 11 characters; the most allowed is 10."
        assert response.json()["error"]["details"] == {"field": "command", "max_chars": 10}


def test_the_session_limit_is_the_configured_one(make_runtime, workdir):
    with serving(make_runtime(max_sessions=2)) as url:
        client = Client(url)
        first = client.open_session(workdir)
        client.open_session(workdir)
        response = client.post("/sessions", json={"workdir": workdir})
        assert "2 open sessions" in error_of(response, 429, "too_many_requests")
        assert int(response.headers["Retry-After"]) >= 1
        assert client.delete(f"/sessions/{first['id']}").status_code == 200
        assert client.open_session(workdir)


def test_a_wrong_content_type_is_415_even_with_a_valid_body(client, workdir):
    body = json.dumps({"workdir": workdir})
    response = client.post("/sessions", data=body, headers={"Content-Type": "text/json"})
    assert "'text/json'" in error_of(response, 415, "unsupported_media_type")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def hostile_target(request, make_runtime, workdir) -> Iterator[tuple[str, str]]:
    """A server, on each database, and the id of one of its sessions."""
    options = {}
    if request.param == "postgres":
        options["database_url"] = fresh_schema_url(request.getfixturevalue("postgres_database"))
    with serving(make_runtime(**options)) as url:
        yield url, Client(url).open_session(workdir)["id"]


# Text that PostgreSQL, execve or UTF-8 refuse (NUL, a lone surrogate), numbers
# past what int() or a timer takes, nesting past the JSON parser's recursion.
HOSTILE = [
    ("GET", "/tasks/ab%00c", None, 404, "task_not_found"),
    ("DELETE", "/sessions/ab%00c", None, 404, "session_not_found"),
    ("GET", "/tasks?session_id=a%00b", None, 400, "invalid_request"),
    ("POST", "/sessions", '{"workdir": "WORKDIR", "model": "a\\u0000b"}', 400, "invalid_request"),
    (
        "POST",
        "/sessions",
        '{"workdir": "WORKDIR", "allowed_tools": ["B\\u0000"]}',
        400,
        "invalid_request",
    ),
    (
        "POST",
        "/sessions",
        '{"workdir": "WORKDIR", "metadata": {"\\u0000": ""}}',
        400,
        "invalid_request",
    ),
    ("POST", "/sessions", '{"\\udcff": 1, "workdir": "WORKDIR"}', 400, "invalid_request"),
    (
        "POST",
        "/sessions",
        '{"workdir": "WORKDIR", "metadata": {"\\udcff": "x"}}',
        400,
        "invalid_request",
    ),
    ("POST", "/sessions", '{"workdir": "WORKDIR", "max_turns": 1e400}', 400, "invalid_request"),
    (
        "POST",
        "/sessions",
        '{"workdir": "WORKDIR", "max_turns": 99999999999999999999}',
        400,
        "invalid_request",
    ),
    (
        "POST",
        "/sessions",
        '{"workdir": "WORKDIR", "append_system_prompt": "LONG"}',
        400,
        "invalid_request",
    ),
    ("POST", "TASKS", '{"command": "hi\\u0000"}', 400, "invalid_request"),
    ("POST", "TASKS", '{"command": "hi\\udcff"}', 400, "invalid_request"),
    ("POST", "TASKS", '{"command": "hi", "timeout_s": 1e300}', 400, "invalid_request"),
    ("POST", "TASKS", "[" * 100_000, 400, "invalid_request"),
    ("GET", "/tasks/x/events?after=99999999999999999999", None, 400, "invalid_request"),
    ("GET", "/tasks?limit=" + "9" * 5000, None, 400, "invalid_request"),
    ("GET", "/tasks?created_after=0001-01-01T00:00:00%2B01:00", None, 400, "invalid_request"),
    ("GET", "/tasks?created_before=9999-12-31T23:59:59-01:00", None, 400, "invalid_request"),
    # A number as clients print small ones: understood, so the task id is what is wrong.
    ("GET", "/tasks/x?wait=1e-3", None, 404, "task_not_found"),
]


def test_input_no_store_or_process_can_take_is_refused_cleanly(hostile_target, workdir):
    url, session_id = hostile_target
    for method, path, body, status, code in HOSTILE:
        path = path.replace("TASKS", f"/sessions/{session_id}/tasks")
        if body is not None:
            body = body.replace("WORKDIR", workdir).replace("LONG", "x" * 200_000)
        response = requests.request(
            method, url + path, data=body, headers={"Content-Type": "application/json"}, timeout=30
        )
        assert response.status_code == status, (method, path, (body or "")[:80], response.text)
        assert response.json()["error"]["code"] == code
    assert len(Client(url).walk("/sessions")) == 1


@pytest.fixture
def serve(tmp_path, claude_bin, claude_env):
    servers: list[ServeProcess] = []

    def start(env: dict[str, str]) -> ServeProcess:
        env = {**claude_env, "AICLI_CLAUDE_BIN": claude_bin, **env}
        servers.append(ServeProcess(f"sqlite:///{tmp_path}/aicli.db", env, tmp_path / "serve.log"))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_aicli_serve_listens_on_loopback_and_hides_its_token_from_claude(serve, workdir):
    server = serve({"AICLI_API_TOKEN": TOKEN})
    listening = [
        conn.laddr
        for conn in psutil.Process(server.popen.pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    ]
    assert listening and {address.ip for address in listening} == {"127.0.0.1"}

    client = Client(server.url, token=TOKEN)
    session = client.open_session(workdir, allowed_tools=["Bash"])
    task = client.wait_terminal(client.submit(session["id"], "[[bash: env]]")["id"])
    assert task["status"] == "completed", task
    output = task["output"].removeprefix("Tool said: ")
    names = {line.partition("=")[0] for line in output.splitlines()}
    assert TOKEN not in output
    assert {name for name in names if name.startswith("AICLI_")} == set()
    # The mark by which aicli finds its own children after a crash.
    assert MARK_VARIABLE in names
    assert {"ANTHROPIC_BASE_URL", "HOME", "PATH"} <= names
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0
