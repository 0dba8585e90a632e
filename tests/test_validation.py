"""The checks shared by HTTP and embedders: each failure names its field in one sentence."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone

import pytest

from aicli import contract, validation
from aicli.contract import SessionCreate, TaskStatus, TaskSubmit
from aicli.errors import InvalidRequest
from aicli.validation import parse_statuses, parse_time


def session_fields(body, *, workspace_root):
    """What the runtime does with a create-session body: the contract, then this machine."""
    return validation.session_fields(contract.convert(body, SessionCreate), workspace_root)


def task_fields(body, *, max_command_chars):
    """What the runtime does with a submit body: the contract, then this server's limit."""
    request = contract.convert(body, TaskSubmit)
    validation.command_fits(request.command, max_command_chars)
    return {
        "command": request.command,
        "timeout_s": request.timeout_s,
        "metadata": request.metadata or {},
    }


def invalid(call, *args, **kwargs) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        call(*args, **kwargs)
    message = caught.value.message
    assert message.endswith(".") and message.count(". ") == 0, message
    return caught.value


def test_session_fields_normalise_everything(tmp_path):
    clean = session_fields(
        {
            "workdir": str(tmp_path / "." / ""),
            "model": "sonnet",
            "permission_mode": "plan",
            "allowed_tools": ["Bash", "Read"],
            "disallowed_tools": ["Write"],
            "append_system_prompt": "",
            "max_turns": 3,
            "metadata": {"team": "a"},
            "network_domains": ["pypi.org"],
            "read_paths": [str(tmp_path / "." / ""), str(tmp_path)],
        },
        workspace_root=None,
    )
    assert clean == {
        "workdir": os.path.realpath(tmp_path),
        "model": "sonnet",
        "permission_mode": "plan",
        "allowed_tools": ("Bash", "Read"),
        "disallowed_tools": ("Write",),
        "append_system_prompt": "",
        "max_turns": 3,
        "metadata": {"team": "a"},
        "approvals": None,
        "approval_timeout_s": None,
        "network_domains": ("pypi.org",),
        "read_paths": (os.path.realpath(tmp_path),),  # real paths, each once
    }


def test_session_fields_treat_null_and_missing_alike(tmp_path):
    clean = session_fields(
        {"workdir": str(tmp_path), "model": None, "allowed_tools": None, "metadata": None},
        workspace_root=None,
    )
    assert clean["model"] is None
    assert clean["allowed_tools"] == ()
    assert clean["metadata"] == {}
    # The runtime passes its keyword defaults straight through.
    assert session_fields({"workdir": str(tmp_path), "allowed_tools": ()}, workspace_root=None)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({}, "workdir", "required"),
        ({"workdir": 3}, "workdir", "string"),
        ({"workdir": ""}, "workdir", "empty"),
        ({"workdir": "/no/such/dir"}, "workdir", "not an existing directory"),
        ({"permission_mode": "yolo"}, "permission_mode", "'yolo'"),
        ({"allowed_tools": "Bash"}, "allowed_tools", "array"),
        ({"allowed_tools": ["Bash", 1]}, "allowed_tools", "allowed_tools[1]"),
        ({"disallowed_tools": [" "]}, "disallowed_tools", "empty"),
        ({"workdir": "a\x00b"}, "workdir", "NUL"),
        ({"max_turns": 0}, "max_turns", ">= 1"),
        ({"max_turns": True}, "max_turns", "integer"),
        ({"max_turns": 1.5}, "max_turns", "integer"),
        ({"metadata": []}, "metadata", "object"),
        ({"metadata": {"a": 1}}, "metadata", "metadata"),
        ({"model": ""}, "model", "empty"),
        ({"append_system_prompt": 5}, "append_system_prompt", "string"),
    ],
)
def test_session_fields_name_what_is_wrong(tmp_path, fields, field, words):
    body = {"workdir": str(tmp_path), **fields}
    if "workdir" not in fields and field == "workdir":
        body.pop("workdir")
    error = invalid(session_fields, body, workspace_root=None)
    assert error.details["field"] == field
    assert words in error.message


def test_unknown_session_fields_are_named(tmp_path):
    error = invalid(
        session_fields, {"workdir": str(tmp_path), "wrokdir": "x", "cwd": "y"}, workspace_root=None
    )
    assert "'cwd', 'wrokdir'" in error.message
    assert error.details["unknown_fields"] == ["cwd", "wrokdir"]


def test_workspace_root_keeps_workdirs_inside(tmp_path):
    root = tmp_path / "root"
    inside = root / "project"
    inside.mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    (tmp_path / "rootish").mkdir()

    assert session_fields({"workdir": str(inside)}, workspace_root=str(root))["workdir"] == str(
        inside.resolve()
    )
    assert session_fields({"workdir": str(root)}, workspace_root=str(root))
    for sneaky in (str(root / ".." / "elsewhere"), str(root / "escape"), str(tmp_path / "rootish")):
        error = invalid(session_fields, {"workdir": sneaky}, workspace_root=str(root))
        assert "outside the workspace root" in error.message


def test_task_fields():
    assert task_fields({"command": "hi"}, max_command_chars=10) == {
        "command": "hi",
        "timeout_s": None,
        "metadata": {},
    }
    clean = task_fields(
        {"command": "hi", "timeout_s": 2, "metadata": {"k": "v"}}, max_command_chars=10
    )
    assert clean["timeout_s"] == 2.0 and isinstance(clean["timeout_s"], float)
    assert task_fields({"command": "x" * 10}, max_command_chars=10)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({}, "command", "required"),
        ({"command": ["ls"]}, "command", "string"),
        ({"command": ""}, "command", "empty"),
        ({"command": " \n\t"}, "command", "whitespace"),
        ({"command": "x" * 11}, "command", "11 characters"),
        ({"command": "x", "timeout_s": 0}, "timeout_s", "> 0"),
        ({"command": "x", "timeout_s": -1}, "timeout_s", "> 0"),
        ({"command": "x", "timeout_s": "5"}, "timeout_s", "number"),
        ({"command": "x", "timeout_s": True}, "timeout_s", "number"),
        ({"command": "x", "timeout_s": float("inf")}, "timeout_s", "number"),
        ({"command": "x", "timeout_s": float("nan")}, "timeout_s", "number"),
        ({"command": "x", "metadata": {"a": None}}, "metadata", "metadata"),
        # A key msgspec refuses: named as the key of its map, not as "key` in `$".
        ({"command": "x", "metadata": {"a\x00b": "v"}}, "metadata", "'metadata' key 'a\\x00b'"),
    ],
)
def test_task_fields_name_what_is_wrong(fields, field, words):
    error = invalid(task_fields, fields, max_command_chars=10)
    assert error.details["field"] == field
    assert words in error.message


def test_unknown_task_fields_are_named():
    error = invalid(task_fields, {"command": "x", "prompt": "y"}, max_command_chars=10)
    assert "'prompt'" in error.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-31T12:00:00Z", datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("2026-01-31t12:00:00z", datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("2026-01-31T12:00:00.5Z", datetime(2026, 1, 31, 12, 0, 0, 500000, tzinfo=UTC)),
        ("2026-01-31T12:00:00.1234567Z", datetime(2026, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2026-01-31T14:00:00+02:00", datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("2026-01-31T14:00:00 02:00", datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("2026-01-31 09:30:00-02:30", datetime(2026, 1, 31, 12, tzinfo=UTC)),
    ],
)
def test_parse_time_accepts_rfc3339(text, expected):
    parsed = parse_time(text, "created_after")
    assert parsed == expected
    assert parsed.tzinfo == UTC
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    ["yesterday", "2026-01-31", "2026-01-31T12:00:00", "2026-13-01T00:00:00Z", "1700000000", ""],
)
def test_parse_time_rejects_the_rest(text):
    error = invalid(parse_time, text, "created_before")
    assert "'created_before'" in error.message
    assert error.details["field"] == "created_before"


def test_parse_time_keeps_the_instant():
    value = parse_time("2026-06-01T00:00:00-05:00", "t")
    assert value == datetime(2026, 6, 1, tzinfo=timezone(timedelta(hours=-5)))


def test_parse_statuses():
    assert parse_statuses("running, pending,running", tuple(TaskStatus), "status") == [
        "running",
        "pending",
    ]
    assert (
        "'done'" in invalid(parse_statuses, "completed,done", tuple(TaskStatus), "status").message
    )
    assert invalid(parse_statuses, "completed,", tuple(TaskStatus), "status")


def test_query_reads_limit_order_wait_after():
    def read(kind, **given):
        return contract.query(given, kind)

    page, events = contract.SessionListQuery, contract.EventQuery
    assert read(page).limit == 50 and read(page, limit="1").limit == 1
    assert read(page, limit="200").limit == 200 and read(page, limit="007").limit == 7
    for bad in ("0", "201", "-1", "ten", "", "1.5", "1e2", "9" * 5000):
        assert "'limit'" in invalid(read, page, limit=bad).message
    assert read(page).order == "desc" and read(page, order="asc").order == "asc"
    assert "'order'" in invalid(read, page, order="up").message
    wait = contract.TaskWaitQuery
    assert read(wait).wait == 0 and read(wait, wait="2.5").wait == 2.5
    assert read(wait, wait="60").wait == 60 and read(wait, wait=".5").wait == 0.5
    for bad in ("61", "-1", "soon", "nan", "inf", "", "-0"):
        assert "'wait'" in invalid(read, wait, wait=bad).message
    assert read(events).after == 0 and read(events, after="7").after == 7
    for bad in ("-1", "x", "1.0"):
        assert "'after'" in invalid(read, events, after=bad).message
    error = invalid(contract.query, {"Last-Event-ID": "x"}, contract.EventHeaders)
    assert "'Last-Event-ID'" in error.message
