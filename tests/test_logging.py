"""Structured logs: one parseable line per record, one per request, never a prompt at INFO."""

from __future__ import annotations

import io
import json
import logging
import re
import signal
import subprocess
import sys

import pytest

from aicli.errors import InvalidRequest
from aicli.log import JsonFormatter, LogfmtFormatter, configure, logfmt_value
from tests.http_server import Client
from tests.serve_process import AICLI, ServeProcess

PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_logfmt(line: str) -> dict[str, str]:
    pairs = PAIR.findall(line)
    assert " ".join(f"{key}={raw}" for key, raw in pairs) == line, f"not logfmt: {line!r}"
    return {key: json.loads(raw) if raw.startswith('"') else raw for key, raw in pairs}


def record(msg: str = "task state", level: int = logging.INFO, **extra: object):
    made = logging.LogRecord("aicli.test", level, __file__, 1, msg, (), None)
    made.__dict__.update(extra)
    return made


def test_a_logfmt_line_has_the_fixed_fields_then_the_extras():
    line = LogfmtFormatter().format(
        record(task_id="t1", session_id="s1", status="running", cost_usd=0.5, error=None)
    )
    fields = parse_logfmt(line)
    assert list(fields)[:4] == ["ts", "level", "logger", "msg"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["ts"])
    assert fields["level"] == "info" and fields["logger"] == "aicli.test"
    assert fields["msg"] == "task state"
    assert fields["task_id"] == "t1" and fields["status"] == "running"
    assert fields["cost_usd"] == "0.5" and fields["error"] == "null"


@pytest.mark.parametrize(
    "hostile",
    ['x" level=error msg="forged', "line\nlevel=error forged", "a\u2028b", "tab\there", ""],
)
def test_values_cannot_break_or_forge_a_line(hostile):
    line = LogfmtFormatter().format(record(route=hostile))
    assert "\n" not in line and "\u2028" not in line
    fields = parse_logfmt(line)
    assert list(fields) == ["ts", "level", "logger", "msg", "route"]
    assert fields["level"] == "info" and fields["route"] == hostile


def test_plain_values_stay_unquoted():
    assert logfmt_value("/tasks/{task_id}") == "/tasks/{task_id}"
    assert logfmt_value(True) == "true" and logfmt_value(12) == "12"


def test_a_traceback_stays_on_the_line():
    try:
        raise ValueError("boom")
    except ValueError:
        failing = logging.LogRecord("aicli", logging.ERROR, __file__, 1, "failed", (), None)
        failing.exc_info = sys.exc_info()
    line = LogfmtFormatter().format(failing)
    assert "\n" not in line
    assert "ValueError: boom" in parse_logfmt(line)["exc"]


def test_json_lines_carry_the_same_fields():
    fields = json.loads(JsonFormatter().format(record(task_id="t1", status="failed")))
    assert fields["msg"] == "task state" and fields["task_id"] == "t1"
    assert fields["level"] == "info" and fields["status"] == "failed"


def test_configure_installs_one_handler_and_checks_its_arguments():
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        configure("warning", "logfmt", stream=io.StringIO())
        configure("info", "json", stream=stream)
        assert len(root.handlers) == len(before) + 1
        logging.getLogger("aicli.test").info("hello", extra={"task_id": "t9"})
        assert json.loads(stream.getvalue())["task_id"] == "t9"
        with pytest.raises(InvalidRequest, match="log level 'loud'"):
            configure("loud")
        with pytest.raises(InvalidRequest, match="log format 'xml'"):
            configure("INFO", "xml")
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
        root.setLevel(level)


def test_serve_refuses_an_unknown_log_level():
    result = subprocess.run(
        [AICLI, "serve", "--log-level", "chatty", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "Unknown log level 'chatty'" in result.stderr


def test_serve_logs_each_request_and_task_state_but_never_the_prompt(
    tmp_path, claude_bin, claude_env, workdir
):
    env = {**claude_env, "AICLI_CLAUDE_BIN": claude_bin}
    server = ServeProcess(f"sqlite:///{tmp_path}/aicli.db", env, tmp_path / "serve.log")
    try:
        client = Client(server.url)
        secret = "the-private-prompt-text-7f3a"
        calls: list[tuple[str, str]] = []

        def call(method: str, path: str, **kwargs):
            request_id = f"req-{len(calls)}"
            response = client.request(method, path, headers={"X-Request-ID": request_id}, **kwargs)
            assert response.headers["X-Request-ID"] == request_id
            calls.append((request_id, path))
            return response.json()

        session = call("POST", "/sessions", json={"workdir": workdir})
        task = call("POST", f"/sessions/{session['id']}/tasks", json={"command": secret})
        call("GET", f"/tasks/{task['id']}", params={"wait": 60})
        call("GET", "/tasks/missing")
        minted = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
        assert re.fullmatch(r"[0-9a-f]{32}", minted.headers["X-Request-ID"])
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    finally:
        server.stop()

    lines = [parse_logfmt(line) for line in server.log_path.read_text().splitlines()]
    assert not [line for line in lines if secret in json.dumps(line)]
    assert not [line for line in lines if line["level"] in ("warning", "error")]
    access = [line for line in lines if line["logger"] == "aicli.http.access"]
    for request_id, _ in calls:
        assert len([line for line in access if line.get("request_id") == request_id]) == 1
    by_id = {line.get("request_id"): line for line in access}
    assert by_id["req-1"]["route"] == "/sessions/{session_id}/tasks"
    assert by_id["req-1"]["session_id"] == session["id"] and by_id["req-1"]["status"] == "202"
    assert by_id["req-2"]["task_id"] == task["id"] and float(by_id["req-2"]["duration_ms"]) >= 0
    assert by_id["req-3"]["status"] == "404" and by_id["req-3"]["task_id"] == "missing"
    states = [line["status"] for line in lines if line.get("task_id") == task["id"]]
    assert {"running", "completed"} <= set(states)
