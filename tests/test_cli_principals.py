"""``aicli principals`` as a real process on a SQLite file: create, list, revoke, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aicli.storage import open_store

AICLI = str(Path(sys.executable).with_name("aicli"))


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/a.db"


@pytest.fixture
def env() -> dict[str, str]:
    """The outer environment without its AICLI_* variables, which would change the settings."""
    return {key: value for key, value in os.environ.items() if not key.startswith("AICLI_")}


def aicli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AICLI, "principals", *args], capture_output=True, text=True, env=env, timeout=60
    )


def create(env: dict[str, str], url: str, *args: str) -> tuple[str, str, str]:
    """(id, token, stdout) of a principal made with ``create`` and ``args``."""
    result = aicli(env, "create", *args, "--database-url", url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    tokens = [line for line in lines if line.startswith("aicli_")]
    assert len(tokens) == 1 and lines[-1] == tokens[0]
    assert "shown only now" in lines[-2]
    fields = dict(line.split("\t", 1) for line in lines if "\t" in line)
    return fields["id"], tokens[0], result.stdout


def listing(env: dict[str, str], url: str) -> dict[str, list[str]]:
    """The rows of ``list``, by id: name, role, status, workspace root, limits, cost."""
    result = aicli(env, "list", "--database-url", url)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split("\t")[:4] == ["ID", "NAME", "ROLE", "STATUS"]
    return {row.split("\t")[0]: row.split("\t")[1:] for row in rows}


def refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr and result.stderr.startswith("aicli: ")
    assert all(word in result.stderr for word in words), result.stderr


def test_list_works_on_an_empty_database(env, database_url):
    assert listing(env, database_url) == {}


def test_create_list_and_revoke(env, database_url):
    user_id, user_token, user_out = create(env, database_url, "alice")
    admin_id, admin_token, admin_out = create(
        env, database_url, "bob", "--admin", "--max-sessions", "3", "--budget-usd", "1.5"
    )
    assert user_token.startswith("aicli_") and admin_token.startswith("aicli_")
    assert user_token != admin_token and user_out.count(user_token) == 1
    assert "name\talice" in user_out and "role\tuser" in user_out
    assert "role\tadmin" in admin_out and "max_sessions=3,budget_usd=1.5" in admin_out

    rows = listing(env, database_url)
    assert rows[user_id][:5] == ["alice", "user", "active", "-", "-"]
    assert rows[admin_id][:5] == ["bob", "admin", "active", "-", "max_sessions=3,budget_usd=1.5"]
    assert float(rows[user_id][5]) == 0.0

    result = aicli(env, "revoke", user_id, "--database-url", database_url)
    assert result.returncode == 0, result.stderr
    assert user_id in result.stdout and "stops working at once" in result.stdout
    assert listing(env, database_url)[user_id][2] == "revoked"
    assert listing(env, database_url)[admin_id][2] == "active"

    store = open_store(database_url)
    try:
        assert store.principals.by_token(user_token) is None
        assert store.principals.get(user_id).revoked_at is not None
        assert store.principals.by_token(admin_token).id == admin_id
    finally:
        store.close()
    again = aicli(env, "revoke", user_id, "--database-url", database_url)
    assert again.returncode == 0 and "already revoked" in again.stdout


def test_no_output_but_create_shows_the_token(env, database_url, tmp_path):
    _, token, _ = create(env, database_url, "carol")
    other = [
        aicli(env, "list", "--database-url", database_url),
        aicli(env, "revoke", "nope", "--database-url", database_url),
    ]
    for result in other:
        assert token not in result.stdout + result.stderr
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("a.db*"))
    assert stored and token.encode() not in stored
    assert token.removeprefix("aicli_").encode() not in stored


def test_a_policy_is_given_as_json_and_shown_whole(env, database_url):
    """1.2: what the policy leaves out is the role's default, and the answer shows it all."""
    given = '{"allowed_tools": ["Read"], "network_domains": ["*.pypi.org"]}'
    _, _, shown = create(env, database_url, "gail", "--policy", given)
    policy = next(line for line in shown.splitlines() if line.startswith("policy\t"))
    assert json.loads(policy.split("\t", 1)[1]) == {
        "allowed_tools": ["Read"],
        "permission_modes": None,
        "network_domains": ["*.pypi.org"],
        "read_paths": [],
    }


def test_the_database_url_defaults_to_the_environment(env, database_url):
    env = {**env, "AICLI_DATABASE_URL": database_url}
    principal_id, _, _ = create(env, database_url, "dave")  # the flag names the same file
    result = aicli(env, "list")
    assert result.returncode == 0 and principal_id in result.stdout


def test_an_unknown_id_is_refused(env, database_url):
    refused(aicli(env, "revoke", "nope", "--database-url", database_url), "No principal", "nope")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["   "], ["'name'"]),
        ([""], ["'name'"]),
        (["erin", "--max-sessions", "-1"], ["'limits.max_sessions'"]),
        (["erin", "--budget-usd", "-0.5"], ["'limits.budget_usd'"]),
        (["erin", "--workspace-root", ""], ["'workspace_root'"]),
        (["erin", "--policy", '{"network_domains": ["http://x"]}'], ["limits.policy"]),
        (["erin", "--policy", "{"], ["'--policy' must be JSON"]),
    ],
)
def test_invalid_fields_are_refused_by_name(env, database_url, tmp_path, args, words):
    refused(aicli(env, "create", *args, "--database-url", database_url), *words)
    assert not (tmp_path / "a.db").exists()  # checked before the database is opened


def test_a_workspace_root_must_be_an_existing_directory(env, database_url, tmp_path):
    (tmp_path / "file").write_text("")
    for path in (tmp_path / "missing", tmp_path / "file"):
        result = aicli(
            env, "create", "fay", "--workspace-root", str(path), "--database-url", database_url
        )
        refused(result, "'workspace_root'", "not an existing directory")


def test_a_workspace_root_lies_inside_the_global_one(env, database_url, tmp_path):
    root = tmp_path / "root"
    (root / "team").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "to_team").symlink_to(root / "team")
    (root / "escape").symlink_to(tmp_path / "elsewhere")
    env = {**env, "AICLI_WORKSPACE_ROOT": str(root)}

    for outside in (tmp_path / "elsewhere", root / "escape", root / ".." / "elsewhere"):
        result = aicli(
            env, "create", "gil", "--workspace-root", str(outside), "--database-url", database_url
        )
        refused(result, "'workspace_root'", "outside the workspace root")

    principal_id, _, out = create(
        env, database_url, "gil", "--workspace-root", str(tmp_path / "to_team")
    )
    real = os.path.realpath(root / "team")
    assert f"workspace_root\t{real}" in out
    assert listing(env, database_url)[principal_id][3] == real
    store = open_store(database_url)
    try:
        assert store.principals.get(principal_id).workspace_root == real
    finally:
        store.close()


def test_without_a_global_root_a_directory_is_stored_as_its_real_path(env, database_url, tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "dir")
    link = str(tmp_path / "link")
    principal_id, _, _ = create(env, database_url, "hal", "--workspace-root", link)
    assert listing(env, database_url)[principal_id][3] == os.path.realpath(tmp_path / "dir")


def test_names_cannot_break_the_lines_of_the_listing(env, database_url):
    principal_id, _, _ = create(env, database_url, "ivy\tx\ny")
    assert listing(env, database_url)[principal_id][0] == "ivy\\tx\\ny"
