"""The terminal client (``aicli run``, ``aicli sessions|tasks|approvals``) as real processes,
against a real ``aicli serve`` with the real Claude CLI and the fake Anthropic API."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import termios
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aicli.client import Client
from aicli.console.output import json_line, plain
from aicli.testing.waiting import wait_for
from tests.serve_process import free_port

pytest_plugins = ("tests.serve_fixtures",)
pytestmark = pytest.mark.cli


@pytest.fixture
def database_url(tmp_path) -> str:
    """SQLite only: the clients see the same API on either database (the storage tests
    cover both), and each server here costs seconds."""
    return f"sqlite:///{tmp_path}/aicli.db"


AICLI = str(Path(sys.executable).with_name("aicli"))
LONG_TASK = "[[bash: echo started; sleep 600]]"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 but \t and \n, DEL, C1


def environment(url: str, token: str | None = None) -> dict[str, str]:
    """Without the outer AICLI_* variables, which could point the client at another server."""
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
    return dict(line.split("\t", 1) for line in text.splitlines())


def rows(text: str) -> dict[str, dict[str, str]]:
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


@pytest.fixture
def spawn():
    """``Popen`` for the test, killed at its end: an assertion failing before ``communicate``
    would otherwise leave the process (and its pipes) behind."""
    started: list[subprocess.Popen[str]] = []

    def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)  # reaps it and closes its pipes


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

    # Claude's text with an OSC 52 (clipboard) and a cursor move in it: printed without them.
    nasty = aicli(
        server.url, "run", "--session", session_id, "[[say: an\x1b]52;c;aGk=\x07sw\x1b[2Aer]]"
    )
    assert nasty.returncode == 0, nasty
    assert nasty.stdout == "answer\n"
    _, nasty_id = ids_of(nasty.stderr)
    assert "\x1b]52;" in client.get_task(nasty_id).output  # the server did send it
    shown = ok(aicli(server.url, "tasks", "show", nasty_id))
    events = ok(aicli(server.url, "tasks", "events", "--json", nasty_id))
    for text in (shown, events):
        assert not CONTROL.search(text), repr(text)
    assert fields(shown)["output"] == "an\\x1b]52;c;aGk=\\x07sw\\x1b[2Aer"  # escaped, not lost


def test_run_of_a_failing_task_exits_1_with_its_error(server, client, workdir):
    result = aicli(server.url, "run", "--workdir", workdir, "[[error: 400]]")
    assert result.returncode == 1, result
    _, task_id = ids_of(result.stderr)
    task = client.get_task(task_id)
    assert task.status == "failed" and task.error
    assert f"aicli: task {task_id} failed: {task.error}" in result.stderr
    assert result.stdout == ""  # the CLI's own "API Error" message is not Claude's answer
    assert "Traceback" not in result.stderr


def _foreground_job() -> None:
    """What an interactive shell does for a foreground job: take the terminal, and give
    SIGINT and SIGQUIT their default actions. A test run started with ``&`` from a script
    has both ignored (POSIX), and an ignored signal stays ignored across exec."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


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
            preexec_fn=_foreground_job,
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

    other = fields(ok(aicli(url, "sessions", "open", workdir)))["id"]
    newest = aicli(url, "sessions", "list", "--limit", "1")
    assert list(rows(ok(newest))) == [other] and "(more sessions" in newest.stderr
    assert set(rows(ok(aicli(url, "sessions", "list", "--limit", "2")))) == {session_id, other}
    ok(aicli(url, "sessions", "close", other))

    closed = fields(ok(aicli(url, "sessions", "close", session_id)))
    assert closed["status"] == "closed" and client.get_session(session_id).status == "closed"
    assert session_id not in rows(ok(aicli(url, "sessions", "list")))
    assert session_id in rows(ok(aicli(url, "sessions", "list", "--all")))
    assert session_id in rows(ok(aicli(url, "sessions", "list", "--status", "closed")))

    refused(aicli(url, "sessions", "show", "nope"), 2, "No session with id 'nope'")
    refused(aicli(url, "tasks", "show", "nope"), 2, "No task with id 'nope'")
    refused(aicli(url, "run", "--session", session_id, "hi"), 2, "closed")


def test_approvals_commands_decide_what_a_run_waits_for(server, client, workdir, spawn):
    url = server.url
    session_id = fields(ok(aicli(url, "sessions", "open", workdir, "--approvals", "ask")))["id"]

    def waiting_run(prompt: str) -> tuple[subprocess.Popen[str], str]:
        process = spawn([AICLI, "run", "--session", session_id, prompt], environment(url))

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


NOW = "2026-01-01T00:00:00.000001Z"
TASK = {"id": "t1", "session_id": "s1", "command": "hi", "status": "pending"}


def sse(seq: int, kind: str, data: dict) -> bytes:
    event = {"seq": seq, "type": kind, "created_at": NOW, "data": data}
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps(event)}\n\n".encode()


class FakeApi(ThreadingHTTPServer):
    """Just enough of the API for the console, scripted where the real server cannot be
    made to misbehave: a submit whose answer is held back, a cancel that never answers,
    text full of escape sequences."""

    daemon_threads = True

    def __init__(self) -> None:
        self.hold_first_submit = False
        self.hang_cancel = False
        self.events: list[bytes] | None = None  # None: one "running" event, then silence
        self.task = dict(TASK, status="running")  # what GET /tasks/t1 answers
        self.listed = [dict(TASK, id=f"t{n}") for n in range(1, 6)]
        self.keys: list[str | None] = []  # the Idempotency-Key of each submit
        self.list_queries: list[dict[str, list[str]]] = []
        self.cancelled: list[str] = []
        self.submit_asked = threading.Event()
        self.cancel_asked = threading.Event()
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), self._handler())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

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
                if self.path == "/sessions":
                    return self._json(201, {"id": "s1", "status": "idle", "workdir": "/tmp"})
                server.keys.append(self.headers.get("Idempotency-Key"))
                first = len(server.keys) == 1
                if first and server.hold_first_submit:
                    server.submit_asked.set()
                    server.release.wait(60)
                self._json(202 if first else 200, TASK)

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if path == "/tasks":
                    given = urllib.parse.parse_qs(query)
                    server.list_queries.append(given)
                    limit = int(given["limit"][0])
                    more = len(server.listed) > limit
                    page = {"data": server.listed[:limit], "has_more": more, "next_cursor": None}
                    return self._json(200, dict(page, next_cursor="next" if more else None))
                if path == "/tasks/t1":
                    return self._json(200, server.task)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                if server.events is None:
                    self.wfile.write(sse(1, "status", {"status": "running"}))
                    self.wfile.flush()
                    server.release.wait(60)
                else:
                    self.wfile.write(b"".join(server.events))
                    self.wfile.flush()

            def do_DELETE(self) -> None:
                server.cancelled.append(self.path.rsplit("/", 1)[-1])
                server.cancel_asked.set()
                if server.hang_cancel:
                    server.release.wait(60)
                self._json(200, dict(TASK, status="cancelled"))

        return Handler


@pytest.fixture
def fake():
    api = FakeApi()
    threading.Thread(target=api.serve_forever, daemon=True).start()
    yield api
    api.release.set()
    api.shutdown()
    api.server_close()


def test_a_second_ctrl_c_while_cancelling_exits_at_once(fake, workdir):
    fake.hang_cancel = True
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
        terminal.close()


def test_ctrl_c_before_the_submit_answers_cancels_the_task_it_made(fake, workdir):
    # The server has the submit (and may have accepted the task) but its answer, the task's
    # id, has not come back: the same submit again, with the same key, gets the id to cancel.
    fake.hold_first_submit = True
    terminal = Terminal([AICLI, "run", "hi"], environment(fake.url), cwd=workdir)
    try:
        assert fake.submit_asked.wait(10)
        terminal.type(b"\x03")
        assert terminal.popen.wait(10) == 130
        first, again = fake.keys
        assert first is not None and re.fullmatch(r"[0-9a-f]{32}", first) and again == first
        assert fake.cancelled == ["t1"]
        wait_for(lambda: "cancelled task t1" in terminal.text, 5, "the cancel notice")
    finally:
        terminal.close()


def test_escape_sequences_from_the_server_never_reach_the_output(fake, workdir):
    # OSC 52 (write the clipboard), OSC 8 (a link), cursor moves and colours, a C1 CSI,
    # a bell, a carriage return and DEL, in Claude's text, a tool line and the error.
    nasty = "\x1b]52;c;aGk=\x07\x1b]8;;http://x\x1b\\\x1b[2A\x1b[31m\x9b2J\x07\r\x7f"
    fake.events = [
        sse(1, "status", {"status": "running"}),
        sse(2, "assistant", {"content": [{"type": "text", "text": f"an{nasty}swer"}]}),
        sse(3, "assistant", {"content": [{"type": "tool_use", "name": f"T{nasty}", "input": {}}]}),
        sse(4, "status", {"status": "failed", "error": f"bro{nasty}ken"}),
    ]
    fake.task = dict(TASK, status="failed", error=f"bro{nasty}ken")
    result = aicli(fake.url, "run", "--workdir", workdir, "hi")
    assert result.returncode == 1, result
    assert result.stdout == "answer\n"
    assert "aicli: task t1 failed: broken" in result.stderr
    for stream in (result.stdout, result.stderr):
        assert not CONTROL.search(stream), repr(stream)


def test_plain_and_json_line_keep_the_text_and_lose_the_controls():
    assert plain("a\x1b]52;c;aGk=\x07b") == "ab"  # OSC ended by BEL
    assert plain("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\") == "link"  # ended by ST
    assert plain("x\x1b[2A\x1b[1;31mred\x1b[0m") == "xred"  # CSI
    assert plain("a\x9b2Jb\x9d0;title\x9cc") == "abc"  # their 8-bit C1 forms
    assert plain("open\x1b]52;c;abc\nnext") == "open\nnext"  # unterminated: to its line's end
    assert plain("k\x1bc\x1b(B\x1b") == "k"  # two-character escapes, a lone ESC
    assert plain("\ttab\nline\r\x00\x07\x7f\x85end") == "\ttab\nlineend"
    assert plain("é ✓ 漢字 ⠋") == "é ✓ 漢字 ⠋"
    encoded = json.dumps({"text": "\x9b\x7f\x1b"}, ensure_ascii=False)
    safe = json_line(encoded)
    assert not CONTROL.search(safe) and json.loads(safe) == {"text": "\x9b\x7f\x1b"}


def test_a_limit_asks_for_one_more_row_than_it_shows(fake):
    listed = aicli(fake.url, "tasks", "list", "--limit", "1")
    assert list(rows(ok(listed))) == ["t1"]
    assert "(more tasks: use --limit N or --all)" in listed.stderr
    assert [query["limit"] for query in fake.list_queries] == [["2"]]
    everything = aicli(fake.url, "tasks", "list", "--limit", "5")
    assert list(rows(ok(everything))) == ["t1", "t2", "t3", "t4", "t5"]
    assert "(more" not in everything.stderr
    assert fake.list_queries[-1]["limit"] == ["6"]
