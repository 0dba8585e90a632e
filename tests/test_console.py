"""The terminal client (``aicli run``, ``aicli sessions|tasks|approvals``) as real processes,
against a real ``aicli serve`` with the real Claude CLI and the fake Anthropic API."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import termios
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aicli.client import Client
from aicli.testing.waiting import wait_for
from tests.serve_process import free_port

pytest_plugins = ("tests.serve_fixtures",)
pytestmark = pytest.mark.cli

AICLI = str(Path(sys.executable).with_name("aicli"))
LONG_TASK = "[[bash: echo started; sleep 600]]"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but \t and \n


def environment(url: str, token: str | None = None) -> dict[str, str]:
    """The outer environment without its AICLI_* variables, pointed at ``url``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AICLI_")}
    env["AICLI_URL"] = url
    if token is not None:
        env["AICLI_TOKEN"] = token
    return env


def aicli(
    url: str, *args: str, token: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AICLI, *args],
        capture_output=True,
        text=True,
        env=environment(url, token),
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr and "aicli: " in result.stderr, result.stderr
    assert all(word in result.stderr for word in words), result.stderr


def fields(text: str) -> dict[str, str]:
    """The ``field<TAB>value`` lines of a ``show``."""
    return dict(line.split("\t", 1) for line in text.splitlines())


def rows(text: str) -> dict[str, dict[str, str]]:
    """The rows of a list under its header, by the first column."""
    header, *lines = text.splitlines()
    names = header.split("\t")
    assert names[0] == "ID", header
    return {line.split("\t")[0]: dict(zip(names, line.split("\t"), strict=True)) for line in lines}


def ids_of(stderr: str) -> tuple[str, str]:
    found = re.search(r"session (\S+) · task (\S+)", stderr)
    assert found, stderr
    return found.group(1), found.group(2)


@pytest.fixture
def server(serve):
    return serve()


@pytest.fixture
def client(server):
    with Client(server.url) as api:
        yield api


def test_run_piped_prints_the_answer_as_plain_text(server, client, workdir):
    result = aicli(server.url, "run", "--workdir", workdir, "[[say: hello from claude]]")
    assert result.returncode == 0, result
    assert result.stdout == "hello from claude\n"
    for stream in (result.stdout, result.stderr):
        assert not CONTROL.search(stream), repr(stream)  # no \r, no escapes: no spinner
    session_id, task_id = ids_of(result.stderr)
    task = client.get_task(task_id)
    assert (task.status, task.output, task.session_id) == (
        "completed",
        "hello from claude",
        session_id,
    )
    assert client.get_session(session_id).workdir == os.path.realpath(workdir)

    # Again in the same session; a tool use is one short line on stderr.
    again = aicli(server.url, "run", "--session", session_id, "[[bash: echo hi]]")
    assert again.returncode == 0, again
    assert "> Bash: echo hi" in again.stderr and "> Bash" not in again.stdout
    assert again.stdout.strip() == "Tool said: hi"
    assert ids_of(again.stderr)[0] == session_id


def test_run_of_a_failing_task_exits_1_with_its_error(server, client, workdir):
    result = aicli(server.url, "run", "--workdir", workdir, "[[error: 400]]")
    assert result.returncode == 1, result
    _, task_id = ids_of(result.stderr)
    task = client.get_task(task_id)
    assert task.status == "failed" and task.error
    assert f"aicli: task {task_id} failed: {task.error}" in result.stderr
    assert result.stdout == ""  # the CLI's own "API Error" message is not Claude's answer
    assert "Traceback" not in result.stderr


class Terminal:
    """A process on a pseudo-terminal of its own (its controlling tty: Ctrl-C works)."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: str) -> None:
        master, slave = os.openpty()
        self.master = master
        self.output = bytearray()
        self._lock = threading.Lock()
        self.popen = subprocess.Popen(
            args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the child's side closed
                return
            if not chunk:
                return
            with self._lock:
                self.output.extend(chunk)

    @property
    def text(self) -> str:
        with self._lock:
            return self.output.decode(errors="replace")

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)
        self._reader.join(5)
        os.close(self.master)


def test_run_on_a_terminal_streams_live_spins_and_ctrl_c_cancels(server, client, workdir):
    terminal = Terminal([AICLI, "run", LONG_TASK], environment(server.url), cwd=workdir)
    try:
        wait_for(lambda: "> Bash: echo started; sleep 600" in terminal.text, 30, "the tool use")
        _, task_id = ids_of(terminal.text)
        assert client.get_task(task_id).status == "running"  # live: the task goes on
        spinning = re.compile(r"\r[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] running · \d+s")
        wait_for(lambda: spinning.search(terminal.text), 5, "the spinner")
        assert "\r\x1b[K> Bash: echo started" in terminal.text  # its line cleared first
        assert terminal.popen.poll() is None

        terminal.type(b"\x03")
        assert terminal.popen.wait(30) == 130
        wait_for(lambda: f"cancelled task {task_id}" in terminal.text, 5, "the cancel notice")
        assert client.get_task(task_id).status == "cancelled"
        # The spinner's line was cleared before the last word.
        assert terminal.text.rstrip().endswith(f"cancelled task {task_id}")
    finally:
        terminal.close()


def test_sessions_and_tasks_commands(server, client, workdir):
    url = server.url
    opened = fields(ok(aicli(url, "sessions", "open", workdir)))
    session_id = opened["id"]
    assert (opened["status"], opened["approvals"]) == ("idle", "off")
    assert ok(aicli(url, "run", "--session", session_id, "[[say: one]]")) == "one\n"

    listed = rows(ok(aicli(url, "sessions", "list")))
    assert listed[session_id]["STATUS"] == "idle"
    assert "completed=1" in listed[session_id]["TASKS"]
    shown = fields(ok(aicli(url, "sessions", "show", session_id)))
    assert shown["workdir"] == os.path.realpath(workdir) and '"completed":1' in shown["task_counts"]

    tasks = rows(ok(aicli(url, "tasks", "list", "--session", session_id)))
    (done_id,) = tasks
    assert (tasks[done_id]["STATUS"], tasks[done_id]["COMMAND"]) == ("completed", "[[say: one]]")
    done = fields(ok(aicli(url, "tasks", "show", done_id)))
    assert (done["status"], done["output"]) == ("completed", "one")
    events = ok(aicli(url, "tasks", "events", done_id)).splitlines()
    kinds = [line.split("\t")[2] for line in events]
    assert kinds[-1] == "status" and events[-1].endswith("\tcompleted")
    assert any(line.endswith("\tassistant\tone") for line in events)
    refused(aicli(url, "tasks", "cancel", done_id), 2, done_id, "already completed")

    running = client.submit(session_id, LONG_TASK)
    wait_for(lambda: client.get_task(running.id).status == "running", 30, "the task to run")
    cancelled = fields(ok(aicli(url, "tasks", "cancel", running.id)))
    assert cancelled["status"] == "cancelled" and client.get_task(running.id).status == "cancelled"
    only = rows(ok(aicli(url, "tasks", "list", "--status", "cancelled")))
    assert list(only) == [running.id]
    first = rows(ok(aicli(url, "tasks", "list", "--limit", "1")))
    assert list(first) == [running.id]  # newest first
    assert set(rows(ok(aicli(url, "tasks", "list", "--all")))) == {done_id, running.id}

    closed = fields(ok(aicli(url, "sessions", "close", session_id)))
    assert closed["status"] == "closed" and client.get_session(session_id).status == "closed"
    assert session_id not in rows(ok(aicli(url, "sessions", "list")))
    assert session_id in rows(ok(aicli(url, "sessions", "list", "--all")))
    assert session_id in rows(ok(aicli(url, "sessions", "list", "--status", "closed")))

    refused(aicli(url, "sessions", "show", "nope"), 2, "No session with id 'nope'")
    refused(aicli(url, "tasks", "show", "nope"), 2, "No task with id 'nope'")
    refused(aicli(url, "run", "--session", session_id, "hi"), 2, "closed")


def test_approvals_commands_decide_what_a_run_waits_for(server, client, workdir):
    url = server.url
    session_id = fields(ok(aicli(url, "sessions", "open", workdir, "--approvals", "ask")))["id"]

    def waiting_run(prompt: str) -> tuple[subprocess.Popen[str], str]:
        """A piped ``aicli run`` in the session, and the id of the approval it waits for."""
        process = subprocess.Popen(
            [AICLI, "run", "--session", session_id, prompt],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(url),
        )

        def pending() -> str | None:
            listed = rows(ok(aicli(url, "approvals", "list", "--status", "pending")))
            return next(iter(listed), None)

        return process, wait_for(pending, 30, "a pending approval")

    process, approval_id = waiting_run("[[bash: echo allowed > allowed.txt]]")
    listed = rows(ok(aicli(url, "approvals", "list")))[approval_id]
    assert (listed["KIND"], listed["TOOL"], listed["INPUT"]) == (
        "tool",
        "Bash",
        "echo allowed > allowed.txt",
    )
    allowed = fields(ok(aicli(url, "approvals", "allow", approval_id, "--message", "fine")))
    assert allowed["status"] == "allowed"
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"? approval {approval_id} asks for Bash: echo allowed > allowed.txt" in err
    assert f"approval {approval_id}: allowed" in err
    assert (Path(workdir) / "allowed.txt").read_text() == "allowed\n"
    refused(aicli(url, "approvals", "deny", approval_id), 2, "already allowed")

    process, approval_id = waiting_run("[[bash: echo denied > denied.txt]]")
    denied = fields(ok(aicli(url, "approvals", "deny", approval_id, "--message", "not now")))
    assert (denied["status"], denied["message"]) == ("denied", "not now")
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err  # a denied tool use: the turn goes on
    assert not (Path(workdir) / "denied.txt").exists()

    process, approval_id = waiting_run("[[ask: Which color? | Red | Blue]]")
    assert fields(ok(aicli(url, "approvals", "show", approval_id)))["kind"] == "question"
    answered = fields(ok(aicli(url, "approvals", "answer", approval_id, "Which color?=Blue")))
    assert answered["status"] == "allowed"
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Blue" in out
    refused(aicli(url, "approvals", "answer", "x", "no equals sign"), 2, "QUESTION=ANSWER")


def test_a_wrong_token_and_an_unreachable_server_are_clear(serve, workdir, tmp_path):
    token = "aicli_" + "k" * 43
    server = serve(env={"AICLI_API_TOKEN": token})
    refused(aicli(server.url, "sessions", "list", token="aicli_wrong"), 2, "AICLI_TOKEN")
    refused(aicli(server.url, "sessions", "list"), 2, "needs a token")
    refused(aicli(server.url, "run", "--workdir", workdir, "[[say: hi]]", token="nope"), 2)
    assert ok(aicli(server.url, "sessions", "list", token=token)).startswith("ID\t")
    token_file = tmp_path / "token"
    token_file.write_text(f"{token}\n")
    listed = aicli(server.url, "tasks", "list", "--token-file", str(token_file), token="bad")
    assert ok(listed).startswith("ID\t")

    nowhere = f"http://127.0.0.1:{free_port()}"
    for args in (("sessions", "list"), ("run", "--workdir", workdir, "hi")):
        result = aicli(nowhere, *args)
        refused(result, 2, nowhere)
        assert len(result.stderr.strip().splitlines()) == 1


class HangingCancel(ThreadingHTTPServer):
    """Just enough of the API for ``aicli run``, with a cancel that never answers."""

    daemon_threads = True

    def __init__(self) -> None:
        self.cancel_asked = threading.Event()
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), self._handler())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self
        now = "2026-01-01T00:00:00.000001Z"
        session = {"id": "s1", "status": "idle", "workdir": "/tmp"}
        task = {"id": "t1", "session_id": "s1", "command": "hi", "status": "running"}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _json(self, status: int, body: dict) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._json(
                    201 if self.path == "/sessions" else 202,
                    session if self.path == "/sessions" else task,
                )

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                event = {
                    "seq": 1,
                    "type": "status",
                    "created_at": now,
                    "data": {"status": "running"},
                }
                self.wfile.write(f"id: 1\nevent: status\ndata: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
                server.release.wait(60)

            def do_DELETE(self) -> None:
                server.cancel_asked.set()
                server.release.wait(60)

        return Handler


def test_a_second_ctrl_c_while_cancelling_exits_at_once(workdir):
    fake = HangingCancel()
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    terminal = Terminal([AICLI, "run", "hi"], environment(fake.url), cwd=workdir)
    try:
        wait_for(lambda: "running · " in terminal.text, 10, "the spinner")
        terminal.type(b"\x03")
        assert fake.cancel_asked.wait(10)
        wait_for(lambda: "cancelling" in terminal.text, 5, "the cancelling state")
        assert terminal.popen.poll() is None  # still waiting for the cancel to answer
        terminal.type(b"\x03")
        assert terminal.popen.wait(5) == 130
        assert "cancelled task" not in terminal.text
    finally:
        fake.release.set()
        terminal.close()
        fake.shutdown()
        fake.server_close()
