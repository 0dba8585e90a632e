"""What the review did from inside a tenant's session, done again over HTTP with the real CLI.

A ``user`` principal opens a session in its own workspace with Bash, Read and Write,
and tries, as the review did, to reach the service and another tenant: the root token
in the server's ``/proc/<pid>/environ``, the operator's API key in its own environment,
the database file, another user's file (with Bash and with the Read tool), other
processes, a write outside its workdir, and the PostgreSQL and aicli ports. Each probe
prints a word that says what happened, so the test reads the tool's output the way
the tenant would. Work inside the workdir must still succeed.
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path

import pytest
import requests

pytest_plugins = ("tests.serve_fixtures",)

ROOT_TOKEN = "aicli_root_" + secrets.token_hex(16)


@pytest.fixture
def tenants(tmp_path, serve, fake_api):
    """A server with a root token, a workspace root, and two users in it; bob has a secret
    file and a finished task whose output holds a secret of his."""
    root = tmp_path / "ws"
    (root / "alice").mkdir(parents=True)
    (root / "bob").mkdir()
    (root / "bob" / "secret.txt").write_text("BOB-FILE-" + "SECRET\n")
    server = serve("--workspace-root", str(root), env={"AICLI_API_TOKEN": ROOT_TOKEN})
    admin = {"Authorization": f"Bearer {ROOT_TOKEN}"}

    def principal(name: str) -> dict[str, str]:
        made = requests.post(
            f"{server.url}/principals",
            json={"name": name, "role": "user", "workspace_root": str(root / name)},
            headers=admin,
            timeout=10,
        )
        assert made.status_code == 201, made.text
        return {"Authorization": f"Bearer {made.json()['token']}"}

    alice, bob = principal("alice"), principal("bob")
    bobs = _open(server.url, bob, str(root / "bob"))
    done = _run(server.url, bob, bobs, "[[say: BOB-TASK-" + "SECRET]]")
    assert done["status"] == "completed", done
    alices = _open(server.url, alice, str(root / "alice"))
    return server, alice, alices, root


def _open(url: str, headers: dict[str, str], workdir: str) -> str:
    opened = requests.post(
        f"{url}/sessions",
        json={"workdir": workdir, "allowed_tools": ["Bash", "Read", "Write"]},
        headers=headers,
        timeout=10,
    )
    assert opened.status_code == 201, opened.text
    return opened.json()["id"]


def _run(url: str, headers: dict[str, str], session_id: str, command: str) -> dict:
    posted = requests.post(
        f"{url}/sessions/{session_id}/tasks",
        json={"command": command},
        headers=headers,
        timeout=10,
    )
    assert posted.status_code == 202, posted.text
    task_id = posted.json()["id"]
    for _ in range(12):
        got = requests.get(
            f"{url}/tasks/{task_id}", params={"wait": 10}, headers=headers, timeout=20
        ).json()
        if got["status"] not in ("pending", "running"):
            return got
    raise AssertionError(f"task {task_id} did not end: {got}")


def _bash(tenants, script: str) -> str:
    server, alice, session_id, _ = tenants
    done = _run(server.url, alice, session_id, f"[[bash: {script}]]")
    assert done["status"] == "completed", done
    return done["output"]


def test_the_root_token_in_the_servers_environment_is_out_of_reach(tenants):
    server = tenants[0]
    out = _bash(
        tenants,
        f"grep -a -q AICLI_API_TOKEN /proc/{server.popen.pid}/environ && echo FOUND-IT "
        "|| echo NOT-FOUND",
    )
    assert "NOT-FOUND" in out and "FOUND-IT" not in out
    assert ROOT_TOKEN not in out


def test_the_environment_holds_no_secret_of_the_service(tenants, fake_api):
    out = _bash(tenants, "env; echo probe-ended")
    assert "probe-ended" in out
    assert "AICLI_" not in out
    assert ROOT_TOKEN not in out
    assert fake_api.env()["ANTHROPIC_API_KEY"] not in out


def test_the_database_cannot_be_read(tenants, database_url):
    database = database_url.removeprefix("sqlite:///")
    out = _bash(tenants, f"cat {database} > /dev/null && echo READ-IT || echo DENIED")
    assert "DENIED" in out and "READ-IT" not in out
    out = _bash(
        tenants, f"grep -a -q BOB-TASK-SECRET {database} && echo FOUND-IT || echo NOT-FOUND"
    )
    assert "NOT-FOUND" in out and "FOUND-IT" not in out


def test_another_users_file_is_out_of_reach_of_bash(tenants):
    secret = tenants[3] / "bob" / "secret.txt"
    out = _bash(tenants, f"cat {secret} && echo READ-IT || echo DENIED")
    assert "DENIED" in out and "BOB-FILE-SECRET" not in out
    out = _bash(tenants, f"ls {secret.parent}; echo probe-ended")
    assert "secret.txt" not in out


def test_another_users_file_is_out_of_reach_of_the_read_tool(tenants):
    server, alice, session_id, root = tenants
    secret = root / "bob" / "secret.txt"
    done = _run(
        server.url,
        alice,
        session_id,
        f"[[tool: Read {json.dumps({'file_path': str(secret)})}]]",
    )
    assert "BOB-FILE-SECRET" not in json.dumps(done)


def test_no_other_process_is_visible(tenants):
    server = tenants[0]
    out = _bash(
        tenants,
        f"test -e /proc/{server.popen.pid}/cmdline && echo SEES-SERVER || echo HIDDEN; "
        "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -q 'aicli[ ]serve' "
        "&& echo SEES-AICLI || echo NO-AICLI; "
        "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -q 'postgres[:]' "
        "&& echo SEES-POSTGRES || echo NO-POSTGRES",
    )
    assert "HIDDEN" in out and "SEES-SERVER" not in out, out
    assert "NO-AICLI" in out and "NO-POSTGRES" in out, out


def test_nothing_outside_the_workdir_can_be_written(tenants, tmp_path):
    root = tenants[3]
    planted = f"planted-{secrets.token_hex(4)}.txt"
    targets = [root / "bob" / planted, tmp_path / planted, Path("/tmp") / planted]
    for target in targets:
        _bash(tenants, f"echo x > {target}; echo probe-ended")
    assert [t for t in targets if t.exists()] == []


def test_no_loopback_port_of_the_host_answers(tenants):
    server = tenants[0]
    out = _bash(
        tenants,
        "(exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && echo PG-CONNECTED || echo PG-REFUSED; "
        f"(exec 3<>/dev/tcp/127.0.0.1/{server.port}) 2>/dev/null && echo AICLI-CONNECTED "
        "|| echo AICLI-REFUSED; echo probe-ended",
    )
    assert "PG-REFUSED" in out and "AICLI-REFUSED" in out, out
    if shutil.which("curl"):
        out = _bash(
            tenants,
            "curl -s -m 5 -o /dev/null -w 'code=%{http_code}' "
            f"http://127.0.0.1:{server.port}/healthz; echo; "
            "curl -s -m 5 -o /dev/null -w 'code=%{http_code}' http://127.0.0.1:5432/; "
            "echo; echo probe-ended",
        )
        assert "code=200" not in out, out


def test_work_inside_the_workdir_succeeds(tenants):
    root = tenants[3]
    out = _bash(tenants, "echo made-inside > inside.txt && cat inside.txt")
    assert "made-inside" in out
    assert (root / "alice" / "inside.txt").read_text() == "made-inside\n"
