"""``aicli serve`` as a real process: flags, the startup line, warnings and clean signals."""

from __future__ import annotations

import signal
import subprocess

import requests

from aicli import __version__
from aicli.cli import build_parser, is_loopback
from aicli.settings import setting_fields
from aicli.testing.waiting import wait_for
from tests.http_server import Client
from tests.serve_process import AICLI

pytest_plugins = ("tests.serve_fixtures",)


def test_version():
    result = subprocess.run([AICLI, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.strip() == f"aicli {__version__}"


def test_every_setting_but_the_secrets_is_a_flag():
    args = build_parser().parse_args(
        ["serve", "--port", "9000", "--idle-process-timeout", "2.5", "--workspace-root", "/srv"]
    )
    assert args.port == 9000 and args.idle_process_timeout == 2.5
    assert args.workspace_root == "/srv" and args.host is None
    names = {name for name, _, _ in setting_fields()} - {"api_token", "secret_key"}
    assert names <= set(vars(args))
    assert "api_token" not in vars(args) and "secret_key" not in vars(args)
    assert "secret_key_file" in vars(args)


def test_loopback_hosts():
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.1.2.3", "example.com"]))


def test_serve_runs_tasks_and_sigterm_lets_the_running_one_finish(serve, workdir):
    server = serve()
    log = server.log_path.read_text()
    assert f"serving on {server.url}" in log
    assert "WARNING" not in log

    client = Client(server.url)
    session = client.open_session(workdir)
    task = client.submit(session["id"], "[[slow: 2]] [[say: graceful]]")
    wait_for(
        lambda: client.get(f"/tasks/{task['id']}").json()["status"] == "running",
        timeout=30,
        what="the task to run",
    )
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0
    assert "stopped" in server.log_path.read_text()

    again = serve(log_name="again.log")
    done = Client(again.url).get(f"/tasks/{task['id']}").json()
    assert done["status"] == "completed" and done["output"] == "graceful"
    again.signal(signal.SIGINT)
    assert again.wait(timeout=60) == 0


def test_a_public_host_without_a_token_is_warned_about(serve, tmp_path):
    exposed = serve("--host", "0.0.0.0")
    assert "WARNING: aicli is listening on 0.0.0.0 with no API token" in (
        exposed.log_path.read_text()
    )
    exposed.signal(signal.SIGINT)
    assert exposed.wait(timeout=60) == 0

    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    guarded = serve(
        "--host", "0.0.0.0", "--api-token-file", str(token_file), log_name="guarded.log"
    )
    assert "WARNING" not in guarded.log_path.read_text()
    assert requests.get(f"{guarded.url}/tasks", timeout=10).status_code == 401
    assert Client(guarded.url, token="from-a-file").get("/tasks").status_code == 200
    guarded.signal(signal.SIGTERM)
    assert guarded.wait(timeout=60) == 0
