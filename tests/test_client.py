"""The Python client against a real ``aicli serve``: every method, the error classes,
the event iterator across a dropped connection, and a retried submit."""

from __future__ import annotations

import http.server
import json
import secrets
import socketserver
import threading
import time
from pathlib import Path

import httpx
import pytest

from aicli.client import Client, follow
from aicli.client import client as client_module
from aicli.contract import Approval, Event, Page, Session, Task
from aicli.errors import (
    ApprovalDecided,
    ApprovalNotFound,
    BudgetExceeded,
    Forbidden,
    InvalidRequest,
    LimitExceeded,
    PrincipalNotFound,
    SessionClosed,
    SessionNotFound,
    TaskNotFound,
    Unauthorized,
    Unavailable,
)
from aicli.testing.relay import Relay
from aicli.testing.waiting import wait_for
from tests.serve_process import free_port

pytest_plugins = ("tests.serve_fixtures",)
pytestmark = pytest.mark.cli

TOKEN = "aicli_" + secrets.token_hex(32)


@pytest.fixture
def database_url(tmp_path) -> str:
    """SQLite only: the clients see the same API on either database (the storage tests
    cover both), and each server here costs seconds."""
    return f"sqlite:///{tmp_path}/aicli.db"


@pytest.fixture
def server(serve):
    return serve(env={"AICLI_API_TOKEN": TOKEN})


@pytest.fixture
def client(server):
    with Client(server.url, token=TOKEN) as client:
        yield client


def test_sessions_tasks_and_pages(client, workdir, monkeypatch):
    session = client.open_session(workdir=workdir, metadata={"team": "docs"})
    assert isinstance(session, Session) and session.metadata == {"team": "docs"}
    assert client.get_session(session.id).workdir == workdir
    assert session.id in [s.id for s in client.list_sessions(status=["idle", "busy"]).data]

    done = client.submit(session.id, "[[say: first]]", wait=30, metadata={"n": "1"})
    assert isinstance(done, Task) and done.status == "completed" and done.output == "first"
    accepted = client.submit(session.id, "[[say: second]]")
    assert client.wait(accepted.id, 30).output == "second"
    assert client.get_task(accepted.id).status == "completed"
    more = [client.submit(session.id, f"[[say: {n}]]") for n in range(3)]
    client.wait(more[-1].id, 30)

    page = client.list_tasks(session_id=session.id, limit=2, order="asc")
    assert isinstance(page, Page) and [t.id for t in page.data] == [done.id, accepted.id]
    assert page.has_more and page.next_cursor
    monkeypatch.setattr(client_module, "PAGE_SIZE", 2)  # five tasks: three pages
    walked = [t.id for t in client.iter_tasks(session_id=session.id, order="asc")]
    assert walked == [done.id, accepted.id, *(t.id for t in more)]
    assert [s.id for s in client.iter_sessions()] == [session.id]
    assert [t.id for t in client.list_tasks(status=["failed"]).data] == []

    log = client.event_log(done.id)
    assert log and all(isinstance(e, Event) for e in log)
    assert [e.seq for e in client.event_log(done.id, after=1, limit=2)] == [2, 3]
    assert [e.seq for e in client.events(done.id)] == [e.seq for e in log]

    closed = client.close_session(session.id)
    assert closed.status == "closed" and client.close_session(session.id).status == "closed"
    with pytest.raises(SessionClosed) as closed_error:
        client.submit(session.id, "too late")
    assert closed_error.value.code == "session_closed"


def test_cancel_mirrors_the_runtime(client, workdir):
    session = client.open_session(workdir=workdir)
    running = client.submit(session.id, "[[slow: 60]] long")
    pending = client.submit(session.id, "never runs")
    wait_for(lambda: client.get_task(running.id).status == "running", 30, "the task to run")

    assert client.cancel(pending.id).status == "cancelled"
    assert client.cancel(running.id).status == "cancelled"
    assert client.cancel(running.id).status == "cancelled"  # again: as it is
    done = client.submit(session.id, "[[say: ok]]", wait=30)
    assert client.cancel(done.id).status == "completed"  # ended: returned, not raised


def test_approvals_and_principals(client, workdir):
    session = client.open_session(workdir=workdir, approvals="ask")
    tool = '[[tool: Write {"file_path": "out.txt", "content": "hi"}]]'
    task = client.submit(session.id, tool)
    approval = wait_for(
        lambda: next(iter(client.approvals(task_id=task.id, status=["pending"]).data), None),
        30,
        "the approval request",
    )
    assert isinstance(approval, Approval) and approval.tool_name == "Write"
    assert client.get_approval(approval.id).status == "pending"
    assert [a.id for a in client.iter_approvals(session_id=session.id)] == [approval.id]
    assert client.decide(approval.id, "allow").status == "allowed"
    with pytest.raises(ApprovalDecided) as decided:
        client.decide(approval.id, "deny", message="changed my mind")
    assert decided.value.details["status"] == "allowed"
    assert client.wait(task.id, 30).status == "completed"
    assert (Path(workdir) / "out.txt").read_text() == "hi"

    user = client.create_principal(name="bob", role="user")
    assert user.token and client.get_principal(user.id).name == "bob"
    assert user.id in [p.id for p in client.list_principals().data]
    assert [n.id for n in client.nodes()]
    with Client(client.base_url, token=user.token) as bob:
        assert bob.me().id == user.id
        with pytest.raises(Forbidden):
            bob.nodes()
        with pytest.raises(SessionNotFound):  # another's session does not exist for bob
            bob.get_session(session.id)
    assert client.revoke_principal(user.id).revoked_at is not None
    with Client(client.base_url, token=user.token) as bob, pytest.raises(Unauthorized):
        bob.me()


def test_errors_are_the_runtime_classes(client, server, workdir):
    with pytest.raises(SessionNotFound) as missing:
        client.get_session("nope")
    assert missing.value.message == "No session with id 'nope'."
    with pytest.raises(TaskNotFound):
        client.get_task("nope")
    with pytest.raises(TaskNotFound):
        list(client.events("nope"))
    with pytest.raises(ApprovalNotFound):
        client.get_approval("nope")
    with pytest.raises(PrincipalNotFound):
        client.get_principal("nope")
    with pytest.raises(InvalidRequest) as invalid:
        client.open_session(workdir=str(Path(workdir) / "missing"))
    assert invalid.value.code == "invalid_request" and "workdir" in invalid.value.message
    with pytest.raises(InvalidRequest):
        client.list_tasks(limit=0)
    with Client(server.url, token="aicli_wrong") as stranger, pytest.raises(Unauthorized):
        stranger.list_sessions()

    with pytest.raises(InvalidRequest) as too_large:
        client.submit(client.open_session(workdir=workdir).id, "x" * (1 << 20))
    assert too_large.value.code == "payload_too_large"

    limits = {"max_sessions": 1, "budget_usd": 0}
    limited = client.create_principal(name="one", limits=limits)
    with Client(server.url, token=limited.token) as one:
        session = one.open_session(workdir=workdir)
        with pytest.raises(LimitExceeded) as full:
            one.open_session(workdir=workdir)
        with pytest.raises(BudgetExceeded):
            one.submit(session.id, "spent")
    assert full.value.code == "too_many_requests" and full.value.retry_after

    nowhere = Client(f"http://127.0.0.1:{free_port()}", retries=1)
    with nowhere, pytest.raises(Unavailable) as unreachable:
        nowhere.list_sessions()
    assert "Could not reach aicli at http://127.0.0.1:" in unreachable.value.message


WRITE = '[[tool: Write {"file_path": "out.txt", "content": "hi"}]]'


class Follower:
    """``client.events(task_id)`` in a thread, each event kept as it comes."""

    def __init__(self, client: Client, task_id: str) -> None:
        self.seen: list[Event] = []
        self._stream = client.events(task_id)
        self._thread = threading.Thread(target=self._follow)
        self._thread.start()

    def _follow(self) -> None:
        with self._stream as events:
            for event in events:
                self.seen.append(event)

    def has(self, event_type: str) -> bool:
        return any(e.type == event_type for e in self.seen)

    def join(self, timeout: float) -> list[Event]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the event iterator did not end"
        return self.seen


def test_events_resume_after_a_dropped_connection(server, workdir):
    """The relay resets every connection while the task waits; the iterator goes on."""
    relay = Relay("127.0.0.1", server.port)
    with relay, Client(relay.url_for(server.url), token=TOKEN) as client:
        session = client.open_session(workdir=workdir, approvals="ask")
        task = client.submit(session.id, WRITE)
        follower = Follower(client, task.id)
        wait_for(lambda: follower.has("approval_requested"), 30, "the approval request")
        before = relay.accepted
        relay.cut()
        (approval,) = client.approvals(task_id=task.id).data  # this call is retried
        client.decide(approval.id, "allow")
        seen = follower.join(60)
        assert relay.accepted > before  # connected again (the pool may share one connection)
        log = client.event_log(task.id)
    assert [e.seq for e in seen] == [e.seq for e in log] == list(range(1, len(log) + 1))
    assert seen[-1].type == "status" and seen[-1].data["status"] == "completed"


def test_events_outlast_a_server_killed_and_started_again(serve, workdir):
    """kill -9 mid-task: the iterator reconnects to the next server and sees the task fail."""
    first = serve(env={"AICLI_API_TOKEN": TOKEN})
    with Client(first.url, token=TOKEN) as client:
        session = client.open_session(workdir=workdir, approvals="ask")
        task = client.submit(session.id, WRITE)
        follower = Follower(client, task.id)
        wait_for(lambda: follower.has("approval_requested"), 30, "the approval request")
        first.stop()
        serve(env={"AICLI_API_TOKEN": TOKEN}, port=first.port, log_name="again.log")
        seen = follower.join(60)
        log = client.event_log(task.id)
    assert [e.seq for e in seen] == [e.seq for e in log] == list(range(1, len(log) + 1))
    assert seen[-1].data["status"] == "failed" and "stopped" in seen[-1].data["error"]


def test_events_of_an_ended_task_end_and_let_go(server, workdir):
    with Client(server.url, token=TOKEN) as client:
        session = client.open_session(workdir=workdir)
        done = client.submit(session.id, "[[say: done]]", wait=30)
        last = client.event_log(done.id)[-1].seq
        assert list(client.events(done.id, after=last)) == []  # nothing after the end
        assert [e.seq for e in client.events(done.id, after=last - 1)] == [last]

        running = client.submit(session.id, "[[slow: 60]] long")
        with client.events(running.id) as events:
            assert next(events).data["status"] == "pending"
        assert client.cancel(running.id).status == "cancelled"


class LosesFirstSubmitAnswer(httpx.HTTPTransport):
    """Sends every request; the first submit's answer is dropped as a reset would drop it."""

    def __init__(self) -> None:
        super().__init__()
        self.submits: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST" and request.url.path.endswith("/tasks"):
            self.submits.append(request.headers.get("Idempotency-Key"))
            if len(self.submits) == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection reset by peer", request=request)
        return response


def test_a_retried_submit_makes_no_second_task(server, workdir):
    transport = LosesFirstSubmitAnswer()
    with Client(server.url, token=TOKEN, transport=transport) as client:
        session = client.open_session(workdir=workdir)
        task = client.submit(session.id, "[[say: once]]", wait=30)
        assert task.status == "completed" and task.output == "once"
        assert len(transport.submits) == 2 and transport.submits[0] == transport.submits[1]
        assert [t.id for t in client.list_tasks(session_id=session.id).data] == [task.id]

        # Opening a session is not retried once sent: a second one would be made.
        lossy = Client(server.url, token=TOKEN, transport=LosesEveryAnswer())
        with lossy, pytest.raises(Unavailable):
            lossy.open_session(workdir=workdir)
        assert len(client.list_sessions().data) == 2


class LosesEveryAnswer(httpx.HTTPTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        super().handle_request(request).close()
        raise httpx.ReadError("connection reset by peer", request=request)


def test_every_code_the_api_sends_maps_to_the_runtime_class():
    from aicli import errors as runtime_errors
    from aicli.client import errors as client_errors
    from aicli.contract import STATUS_CODES

    coded = [
        cls
        for cls in vars(runtime_errors).values()
        if isinstance(cls, type) and issubclass(cls, runtime_errors.AicliError)
        if "code" in vars(cls) and cls.code not in ("internal_error", "already_serving")
    ]
    for cls in coded:
        built = client_errors.build(cls.code, "said", {"k": "v"}, retry_after=2)
        assert type(built) is cls and built.message == "said" and built.details == {"k": "v"}
    assert set(STATUS_CODES.values()) <= set(client_errors.CLASSES)
    assert client_errors.build("too_many_requests", "full", retry_after=3).retry_after == 3
    assert type(client_errors.build("something_new", "hm")) is runtime_errors.AicliError


class QuietStream(http.server.BaseHTTPRequestHandler):
    """A stream that sends one event, then only keep-alives for ``quiet`` seconds, and ends;
    the next connection gets the terminal event. The task itself reads as running."""

    protocol_version = "HTTP/1.1"
    quiet = 0.0
    requests: list[tuple[str, str | None]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.requests.append((self.path, self.headers.get("Last-Event-ID")))
        self.close_connection = True
        if not self.path.startswith("/tasks/t1/events"):
            body = b'{"id": "t1", "session_id": "s1", "command": "x", "status": "running"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        if self.headers.get("Last-Event-ID") == "0":
            self._event(1, "running")
            deadline = time.monotonic() + self.quiet
            while time.monotonic() < deadline:
                self.wfile.write(b": keep-alive\n\n")
                self.wfile.flush()
                time.sleep(0.05)
        else:
            self._event(2, "completed")

    def _event(self, seq: int, status: str) -> None:
        event = {"seq": seq, "type": "status", "created_at": "2026-12-03T00:00:00.000001Z"}
        data = json.dumps({**event, "data": {"status": status}})
        self.wfile.write(f"id: {seq}\nevent: status\ndata: {data}\n\n".encode())
        self.wfile.flush()


@pytest.fixture
def quiet_server():
    QuietStream.requests = []
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), QuietStream)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_quiet_task_is_followed_past_the_reconnect_budget(quiet_server, monkeypatch):
    """Keep-alives are signs of life: a drop after a long quiet spell is reconnected."""
    monkeypatch.setattr(follow, "RECONNECT_S", 0.5)
    monkeypatch.setattr(QuietStream, "quiet", 1.0)
    with Client(quiet_server) as client:
        assert [e.seq for e in client.events("t1")] == [1, 2]
    streams = [after for path, after in QuietStream.requests if path.endswith("/events")]
    assert streams == ["0", "1"]


def test_a_stream_closed_from_another_thread_lets_go(quiet_server, monkeypatch):
    monkeypatch.setattr(QuietStream, "quiet", 30.0)
    with Client(quiet_server) as client:
        stream = client.events("t1")
        assert next(stream).seq == 1
        reader = threading.Thread(target=lambda: list(stream))
        reader.start()
        wait_for(lambda: len(QuietStream.requests) == 1, 5, "the stream")
        stream.close()  # while the reader blocks on it
        reader.join(5)
        assert not reader.is_alive()
