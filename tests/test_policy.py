"""Session policies (1.2): what each principal's sessions may ask for, set by admins.

Over HTTP with the real runtime and Waitress (every answer checked against the served
OpenAPI document); the last test drives the real CLI against the fake API.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from aicli.actors.claude_process import build_argv
from aicli.contract import SessionSettings
from aicli.testing import store_sql
from aicli.testing.fake_anthropic import FakeAnthropic, Reply
from aicli.testing.waiting import wait_for
from tests.http_server import Client, create_principal, error_of

pytest_plugins = ("tests.http_fixtures",)

ANY = {"allowed_tools": None, "permission_modes": None, "network_domains": None, "read_paths": None}
USER = {**ANY, "network_domains": [], "read_paths": []}


@pytest.fixture
def dirs(tmp_path) -> dict[str, str]:
    """A workspace root with a workdir, and shared data outside it: some allowed, some not."""
    made = {
        "work": tmp_path / "workspace" / "project",
        "data": tmp_path / "shared" / "data",
        "inner": tmp_path / "shared" / "data" / "inner",
        "other": tmp_path / "elsewhere",
    }
    for path in made.values():
        path.mkdir(parents=True)
    return {name: str(path.resolve()) for name, path in made.items()}


@pytest.fixture
def workspace_root(tmp_path, dirs) -> Path:
    """The workspace ``dirs`` made, with the workdir in it."""
    return tmp_path / "workspace"


def as_principal(url: str, admin: Client, policy: dict[str, Any] | None = None) -> Client:
    limits = None if policy is None else {"policy": policy}
    return Client(url, token=create_principal(admin, "tenant", limits=limits)["token"])


def refused(response: Any, field: str, not_allowed: list[str]) -> str:
    message = error_of(response, 403, "forbidden")
    assert response.json()["error"]["details"] == {"field": field, "not_allowed": not_allowed}
    assert f"does not allow {field}: {', '.join(not_allowed)}" in message, message
    assert "'tenant'" in message
    return message


def test_each_role_has_its_default_policy_and_shows_it(admin, url, dirs):
    user = create_principal(admin, "tenant")
    assert user["limits"]["policy"] == USER
    assert create_principal(admin, "ops", role="admin")["limits"]["policy"] == ANY
    assert admin.get("/me").json()["limits"]["policy"] == ANY  # the built-in root
    # A policy given in part: what it leaves out is the role's default, null allows anything.
    given = create_principal(admin, "dev", limits={"policy": {"allowed_tools": ["Read"]}})
    assert given["limits"]["policy"] == {**USER, "allowed_tools": ["Read"]}
    opened = create_principal(admin, "net", limits={"policy": {"network_domains": None}})
    assert opened["limits"]["policy"] == {**USER, "network_domains": None}

    as_user = Client(url, token=user["token"])
    session = as_user.open_session(dirs["work"])
    assert (session["network_domains"], session["read_paths"], session["tools"]) == ([], [], None)
    response = as_user.post(
        "/sessions", json={"workdir": dirs["work"], "network_domains": ["a.io"]}
    )
    refused(response, "network_domains", ["a.io"])
    # An admin's sessions may reach anything it names.
    session = admin.open_session(dirs["work"], network_domains=["a.io"], read_paths=[dirs["other"]])
    assert (session["network_domains"], session["read_paths"]) == (["a.io"], [dirs["other"]])


POLICY = {
    "allowed_tools": ["Read", "Bash"],
    "permission_modes": ["default", "acceptEdits"],
    "network_domains": ["*.example.org", "api.github.com:443", "10.0.0.7", "[::1]:8080"],
}


@pytest.mark.parametrize(
    ("asked", "field", "not_allowed"),
    [
        ({"allowed_tools": ["Bash(git:*)", "Write", "Read"]}, "allowed_tools", ["Write"]),
        ({"allowed_tools": ["Edit(src/**)"]}, "allowed_tools", ["Edit(src/**)"]),
        ({"permission_mode": "bypassPermissions"}, "permission_mode", ["bypassPermissions"]),
        (
            {"network_domains": ["a.example.org", "example.org", "evil.org"]},
            "network_domains",
            ["example.org", "evil.org"],
        ),
        ({"network_domains": ["api.github.com"]}, "network_domains", ["api.github.com"]),
        ({"network_domains": ["api.github.com:80"]}, "network_domains", ["api.github.com:80"]),
        ({"network_domains": ["*.org"]}, "network_domains", ["*.org"]),
        ({"network_domains": ["[::1]"]}, "network_domains", ["[::1]"]),
    ],
)
def test_a_session_asking_for_more_than_its_policy_gets_403_naming_the_part(
    admin, url, dirs, asked, field, not_allowed
):
    tenant = as_principal(url, admin, POLICY)
    refused(tenant.post("/sessions", json={"workdir": dirs["work"], **asked}), field, not_allowed)
    assert tenant.get("/sessions").json()["data"] == []  # nothing was opened


def test_a_permission_mode_not_given_counts_as_default(admin, url, dirs):
    tenant = as_principal(url, admin, {"permission_modes": ["acceptEdits"]})
    refused(
        tenant.post("/sessions", json={"workdir": dirs["work"]}), "permission_mode", ["default"]
    )
    tenant.open_session(dirs["work"], permission_mode="acceptEdits")


def test_a_session_inside_its_policy_is_opened_with_what_it_asked(admin, url, dirs):
    tenant = as_principal(url, admin, {**POLICY, "read_paths": [dirs["data"]]})
    asked = {
        "allowed_tools": ["Bash(git:*)", "Read"],
        "permission_mode": "acceptEdits",
        # Under the wildcard (a wildcard too), the port the entry names, an address.
        "network_domains": [
            "a.example.org",
            "x.y.Example.org",
            "*.b.example.org",
            "api.github.com:443",
            "10.0.0.7:22",
            "[::1]:8080",
        ],  # fmt: skip
        "read_paths": [dirs["inner"], dirs["data"] + "/inner/../"],
    }
    session = tenant.open_session(dirs["work"], **asked)
    assert session["network_domains"] == asked["network_domains"]
    assert session["read_paths"] == [dirs["inner"], dirs["data"]]  # real paths, each once
    assert session["tools"] == POLICY["allowed_tools"]  # all its CLI can use: the policy's
    assert tenant.get(f"/sessions/{session['id']}").json() == session


def test_read_paths_outside_the_policy_are_refused_before_they_are_looked_for(
    admin, url, dirs, tmp_path
):
    tenant = as_principal(url, admin, {"read_paths": [dirs["data"]]})
    link = tmp_path / "shared" / "data" / "link"
    link.symlink_to(dirs["other"])  # inside by name, outside by its real path
    for path in (dirs["other"], str(link), dirs["data"] + "/../../elsewhere", "/nonexistent/x"):
        response = tenant.post("/sessions", json={"workdir": dirs["work"], "read_paths": [path]})
        refused(response, "read_paths", [os.path.realpath(path)])
    # Inside but no directory: 400, as a workdir.
    missing = dirs["data"] + "/missing"
    response = tenant.post("/sessions", json={"workdir": dirs["work"], "read_paths": [missing]})
    assert "is not an existing directory" in error_of(response, 400, "invalid_request")
    assert response.json()["error"]["details"] == {"field": "read_paths"}


def test_an_admin_changes_a_policy_and_the_next_session_may_do_more(admin, url, dirs):
    made = create_principal(admin, "tenant")
    tenant = Client(url, token=made["token"])
    before = tenant.open_session(dirs["work"])
    asking = {"workdir": dirs["work"], "network_domains": ["pypi.org"]}
    refused(tenant.post("/sessions", json=asking), "network_domains", ["pypi.org"])

    limits = {"max_sessions": 5, "policy": {"network_domains": ["pypi.org"]}}
    response = admin.request("PATCH", f"/principals/{made['id']}", json={"limits": limits})
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["limits"]["max_sessions"] == 5 and changed["token"] is None
    assert changed["limits"]["policy"] == {**USER, "network_domains": ["pypi.org"]}
    assert admin.get(f"/principals/{made['id']}").json() == changed
    assert tenant.open_session(**asking)["network_domains"] == ["pypi.org"]
    # A session opened before keeps what it was opened with.
    assert tenant.get(f"/sessions/{before['id']}").json()["network_domains"] == []

    # The limits are replaced as a whole: left out, no limit and the role's default policy.
    response = admin.request("PATCH", f"/principals/{made['id']}", json={"limits": {}})
    assert response.json()["limits"] == {
        "max_sessions": None,
        "max_pending_per_session": None,
        "budget_usd": None,
        "max_stored_bytes": None,
        "policy": USER,
    }
    refused(tenant.post("/sessions", json=asking), "network_domains", ["pypi.org"])


def test_only_an_admin_changes_limits_of_a_principal_that_has_a_row(admin, url):
    made = create_principal(admin, "tenant")
    tenant = Client(url, token=made["token"])
    opening = {"limits": {"policy": {"network_domains": None}}}
    for target in (made["id"], "nobody"):  # its own too, and an id it cannot know
        response = tenant.request("PATCH", f"/principals/{target}", json=opening)
        assert "Only an admin may change principals" in error_of(response, 403, "forbidden")
    assert tenant.get("/me").json()["limits"]["policy"] == USER
    response = admin.request("PATCH", "/principals/nobody", json=opening)
    error_of(response, 404, "not_found")
    response = admin.request("PATCH", "/principals/root", json=opening)
    assert "'root'" in error_of(response, 403, "forbidden")
    response = admin.request("PATCH", f"/principals/{made['id']}", json={"limit": {}})
    error_of(response, 400, "invalid_request")


BAD_DOMAINS = [
    "https://example.org",
    "example.org/path",
    "exa mple.org",
    "example.org:0",
    "example.org:65536",
    "*.",
    "*",
    "a.*.org",
    "-a.org",
    "example.org.",
    "1.2.3.256",
    "::1",
    "[::1",
    "",
]


@pytest.mark.parametrize("domain", BAD_DOMAINS)
def test_a_malformed_domain_is_400_in_a_session_and_in_a_policy(admin, dirs, domain):
    response = admin.post("/sessions", json={"workdir": dirs["work"], "network_domains": [domain]})
    assert "'network_domains" in error_of(response, 400, "invalid_request")
    assert response.json()["error"]["details"]["field"] == "network_domains"
    policy = {"policy": {"network_domains": [domain]}}
    response = admin.post("/principals", json={"name": "x", "limits": policy})
    assert "limits.policy.network_domains" in error_of(response, 400, "invalid_request")


def test_a_policy_names_tools_and_absolute_paths(admin):
    for policy in ({"allowed_tools": ["Bash(git:*)"]}, {"read_paths": ["data"]}):
        response = admin.post("/principals", json={"name": "x", "limits": {"policy": policy}})
        error_of(response, 400, "invalid_request")


def test_the_cli_offers_only_the_tools_a_policy_names():
    settings = SessionSettings(workdir="/w", allowed_tools=("Bash(git:*)",), tools=("Read", "Bash"))
    argv = build_argv("claude", settings, None)
    assert argv[argv.index("--tools") + 1] == "Read,Bash"
    assert build_argv("claude", SessionSettings(workdir="/w", tools=()), None)[-2:] == [
        "--tools",
        "",
    ]
    assert "--tools" not in build_argv("claude", SessionSettings(workdir="/w"), None)


def write_file_with_bash(fake_api: FakeAnthropic) -> None:
    """The model calls Bash to write a file whether or not the CLI offers Bash."""

    def responder(request: Any) -> Reply | None:
        if "[[force-bash]]" in request.prompt and request.last_tool_result is None:
            return Reply.bash("echo hi > written.txt")
        return None

    fake_api.responder = responder


def run_with_every_use_allowed(client: Client, session: dict[str, Any]) -> dict[str, Any]:
    """Submit, allow each approval the task asks for, and return the task once it ended."""
    task = client.submit(session["id"], "[[force-bash]]")

    def ended_or_asking() -> bool:
        for approval in client.get("/approvals", params={"task_id": task["id"]}).json()["data"]:
            if approval["status"] == "pending":
                response = client.post(f"/approvals/{approval['id']}", json={"decision": "allow"})
                assert response.status_code == 200, response.text
        return client.get(f"/tasks/{task['id']}").json()["status"] in ("completed", "failed")

    wait_for(ended_or_asking, 60, "the task to end")
    return client.get(f"/tasks/{task['id']}").json()


def test_a_tool_outside_the_policy_cannot_run_even_when_a_person_allows_it(
    admin, url, fake_api, tmp_path
):
    """The real CLI: ``--tools Read`` leaves Bash out, so no approval is even asked for."""
    write_file_with_bash(fake_api)
    # An admin's session (no policy): Bash asks, a person allows, the file is written.
    free = tmp_path / "workspace" / "free"
    free.mkdir()
    session = admin.open_session(str(free), approvals="ask")
    run_with_every_use_allowed(admin, session)
    assert (free / "written.txt").read_text() == "hi\n"
    assert admin.get("/approvals", params={"session_id": session["id"]}).json()["data"]

    tenant = as_principal(url, admin, {"allowed_tools": ["Read"]})
    held = tmp_path / "workspace" / "held"
    held.mkdir()
    session = tenant.open_session(str(held), approvals="ask", allowed_tools=["Read"])
    assert session["tools"] == ["Read"]
    task = run_with_every_use_allowed(tenant, session)
    assert task["status"] == "completed"
    assert not (held / "written.txt").exists()
    assert tenant.get("/approvals", params={"session_id": session["id"]}).json()["data"] == []
    results = [
        event["data"]
        for event in tenant.get(f"/tasks/{task['id']}/events").json()["data"]
        if "No such tool available: Bash" in str(event["data"])
    ]
    assert results, "the CLI said Bash is not there"
    claude_id = tenant.get(f"/sessions/{session['id']}").json()["claude_session_id"]
    turns = [r for r in fake_api.requests if r.session_id == claude_id and r.prompt]
    assert turns and all(r.offers("Read") and not r.offers("Bash") for r in turns)


def test_principals_created_before_policies_have_their_roles_default(tmp_path: Path):
    """Rows from before migration 13 have no policy: they read as their role's default."""
    from aicli.contract import PrincipalCreate, Role
    from aicli.storage import open_store

    store = open_store(f"sqlite:///{tmp_path}/old.db")
    try:
        made = {
            role: store.principals.create(PrincipalCreate(name=str(role), role=role))
            for role in Role
        }
        store_sql.write(store, "UPDATE principals SET policy = NULL")
        for role, principal in made.items():
            policy = store.principals.get(principal.id).limits.policy
            assert (policy.network_domains is None) == (role == Role.ADMIN), role
    finally:
        store.close()
