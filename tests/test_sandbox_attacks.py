"""Attacks on the sandbox's edges: what a tenant can do from inside to what aicli does
outside it.

The session's directory (its Claude config directory with the transcripts) is
writable inside the sandbox, and a link made there may point anywhere. aicli reads
a turn's transcript out of it into the database and writes the stored one back before
a resume; neither may follow a tenant's link out of the session's directory.

A session's read paths, like its workdir, are real paths when it is opened, and srt
binds what they lead to when each process starts: one swapped for a link in between
(from a session whose workdir holds it) must not lead the next process elsewhere.

The API proxy's port is reachable from every sandbox (through srt's proxy), so a
tenant can open as many connections to it as it likes; the places the proxy serves
are shared by all sessions, and one tenant must not be able to take them all.
"""

from __future__ import annotations

import http.client
import json
import os
import socket

import pytest

from aicli.actors import api_proxy
from aicli.actors.api_proxy import ApiProxy
from aicli.actors.claude_env import session_environment
from aicli.actors.session_dirs import session_dirs
from aicli.actors.transcript_files import read_new, restore
from aicli.contract import TaskStatus

SECRET = b"OUTSIDE-SECRET\n"


@pytest.fixture
def session(tmp_path):
    """A session's directory with its config dir, and a secret file and directory outside."""
    root = tmp_path / "sessions" / "s1"
    project = root / "claude" / "projects" / "-w"
    project.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.key").write_bytes(SECRET)
    return root, project, outside


def test_a_transcript_linked_elsewhere_is_not_read(session):
    root, project, outside = session
    (project / "t.jsonl").symlink_to(outside / "secret.key")
    with pytest.raises(OSError):
        read_new(project / "t.jsonl", 0, root)


@pytest.mark.parametrize("linked", ["project", "config"])
def test_a_directory_linked_elsewhere_is_not_read_through(session, linked):
    root, project, outside = session
    swapped = project if linked == "project" else root / "claude"
    os.rename(swapped, swapped.with_name("moved"))
    swapped.symlink_to(outside)
    path = (outside if linked == "project" else outside / "projects" / "-w") / "t.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(SECRET)
    with pytest.raises(OSError):
        read_new(project / "t.jsonl", 0, root)


def test_a_restore_never_writes_through_a_linked_directory(session):
    root, project, outside = session
    os.rename(project, project.with_name("moved"))
    project.symlink_to(outside)
    with pytest.raises(OSError):
        restore(project / "t.jsonl", b"stored\n", root)
    assert sorted(os.listdir(outside)) == ["secret.key"]


def test_a_restore_replaces_a_linked_transcript_and_leaves_its_target(session):
    root, project, outside = session
    (project / "t.jsonl").symlink_to(outside / "secret.key")
    assert restore(project / "t.jsonl", b"stored\n", root) is True
    assert not (project / "t.jsonl").is_symlink()
    assert (project / "t.jsonl").read_bytes() == b"stored\n"
    assert (outside / "secret.key").read_bytes() == SECRET


def test_a_path_outside_the_session_is_refused(session):
    root, _, outside = session
    with pytest.raises(ValueError):
        read_new(outside / "secret.key", 0, root)


# -- read paths ---------------------------------------------------------------------------


@pytest.mark.cli
def test_a_read_path_swapped_for_a_link_fails_the_next_task_saying_so(
    make_runtime, workdir, tmp_path_factory
):
    rt = make_runtime()
    shared = tmp_path_factory.mktemp("shared")
    other = tmp_path_factory.mktemp("other-tenant")
    (other / "secret.txt").write_text("OTHER-TENANTS-" + "SECRET")
    session = rt.open_session(workdir=workdir, allowed_tools=["Bash"], read_paths=[str(shared)])
    os.rename(shared, f"{shared}-moved")
    os.symlink(other, shared)
    task = rt.wait(rt.submit(session.id, f"[[bash: cat {shared}/secret.txt]]").id, timeout=60)
    assert "OTHER-TENANTS-SECRET" not in (task.output or "")
    assert task.status == TaskStatus.FAILED
    assert "no longer the directory" in (task.error or "")
    assert str(other) in (task.error or "")


# -- the permission mode ------------------------------------------------------------------


@pytest.mark.cli
def test_a_permission_mode_left_in_the_sessions_config_dir_does_not_apply(
    make_runtime, workdir, state_dir
):
    """The session's config directory is writable inside, and its settings.json is read
    at the next process start: a ``defaultMode`` there must not set the mode the policy
    decides (its Bash wrote it; here the test does)."""
    rt = make_runtime()
    session = rt.open_session(workdir=workdir, allowed_tools=["Read"])
    config = session_dirs(state_dir, session.id).claude
    config.mkdir(parents=True)
    accept = {"permissions": {"defaultMode": "acceptEdits"}}
    (config / "settings.json").write_text(json.dumps(accept))
    made = os.path.join(workdir, "made-without-asking")
    write = json.dumps({"file_path": made, "content": "x"})
    rt.wait(rt.submit(session.id, f"[[tool: Write {write}]]").id, timeout=60)
    assert not os.path.exists(made)


@pytest.mark.cli
@pytest.mark.parametrize("where", ["settings.json", ".claude.json"])
def test_no_command_left_in_the_sessions_config_dir_runs_at_the_next_start(
    make_runtime, workdir, state_dir, where
):
    """A hook (settings.json) or an MCP server (.claude.json) there is a command the CLI
    runs: with them a session whose policy leaves out Bash but allows Write would run
    commands all the same."""
    rt = make_runtime()
    session = rt.open_session(workdir=workdir, allowed_tools=["Read"])
    config = session_dirs(state_dir, session.id).claude
    config.mkdir(parents=True)
    ran = os.path.join(workdir, "command-ran")
    command = {"type": "command", "command": f"touch {ran}"}
    planted = {
        "settings.json": {"hooks": {"UserPromptSubmit": [{"hooks": [command]}]}},
        ".claude.json": {"mcpServers": {"x": {"command": "touch", "args": [ran]}}},
    }[where]
    (config / where).write_text(json.dumps(planted))
    rt.wait(rt.submit(session.id, "[[say: hi]]").id, timeout=60)
    assert not os.path.exists(ran)


# -- the environment ----------------------------------------------------------------------


def test_no_credential_of_the_clis_own_passes_into_the_sandbox(tmp_path):
    """The CLI's switches pass (CLAUDE_CODE_*), but some of its variables are credentials
    an operator may well have set: an OAuth token of a Claude subscription above all."""
    secrets = {
        name: f"secret-of-{name}"
        for name in (
            "CLAUDE_CODE_OAUTH_TOKEN",
            "CLAUDE_CODE_OAUTH_REFRESH_TOKEN",
            "CLAUDE_CODE_GATEWAY_TOKEN",
            "CLAUDE_CODE_CLIENT_KEY_PASSPHRASE",
        )
    }
    server_env = {**secrets, "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "1000", "PATH": "/usr/bin"}
    env = session_environment(
        server_env,
        {},
        session_dirs(str(tmp_path), "s1"),
        "http://127.0.0.1:1",
        "cap",
        sandboxed=True,
    )
    assert not set(secrets) & set(env)
    assert env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "1000"


# -- the API proxy's connections ----------------------------------------------------------


@pytest.fixture
def proxy(fake_api):
    proxy = ApiProxy(fake_api.url, {"x-api-key": "sk-ant-operator"})
    proxy.start()
    yield proxy
    proxy.stop()


def _ask(proxy: ApiProxy, token: str, conn: http.client.HTTPConnection | None = None):
    conn = conn or http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    conn.request("POST", "/v1/messages", body=json.dumps(body), headers={"x-api-key": token})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_idle_openings_cannot_keep_another_tenant_from_the_api(proxy, monkeypatch):
    monkeypatch.setattr(api_proxy, "MAX_CLIENTS", 4)
    attacker = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(8)]
    try:
        status, _ = _ask(proxy, proxy.grant())
        assert status == 200
    finally:
        for sock in attacker:
            sock.close()


def test_one_token_cannot_hold_every_connection(proxy, monkeypatch):
    monkeypatch.setattr(api_proxy, "MAX_CLIENTS", 4)
    monkeypatch.setattr(api_proxy, "MAX_PER_TOKEN", 2)
    tenant = proxy.grant()
    held = [http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10) for _ in range(3)]
    assert [_ask(proxy, tenant, conn)[0] for conn in held[:2]] == [200, 200]
    status, body = _ask(proxy, tenant, held[2])
    assert status == 429 and body["error"]["type"] == "rate_limit_error"
    assert _ask(proxy, tenant, held[0])[0] == 200  # its own connections still serve it
    assert _ask(proxy, proxy.grant())[0] == 200  # and another tenant gets in
    for conn in held:
        conn.close()


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/v1/files"),
        ("GET", "/v1/messages/batches"),
        ("GET", "/v1/models"),
        ("POST", "/v1/messages/batches"),
        ("GET", "/v1/organizations/api_keys"),
        ("POST", "/v1/%6dessages"),
    ],
)
def test_a_token_reaches_nothing_of_the_api_but_messages(fake_api, proxy, method, target):
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request(method, target, body=b"{}", headers={"x-api-key": proxy.grant()})
    response = conn.getresponse()
    assert response.status == 400
    assert json.loads(response.read())["error"]["type"] == "invalid_request_error"
    assert fake_api.requests == []
