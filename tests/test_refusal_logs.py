"""A refusal is an answer, not a crash: it logs no traceback; bugs and outages keep theirs."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pykka
import pytest

import aicli.actors  # noqa: F401 - importing the package installs the filter under test
from aicli import errors
from tests.http_server import Client

pytest_plugins = ("tests.http_fixtures",)


class Refuser(pykka.ThreadingActor):
    def refuse(self, error: Exception) -> None:
        raise error


@pytest.fixture
def refuser() -> Iterator[pykka.ActorProxy[Refuser]]:
    ref = Refuser.start()
    yield ref.proxy()
    ref.stop()


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.exc_info or record.exc_text]


@pytest.mark.parametrize(
    "error",
    [
        errors.SessionNotFound("s"),
        errors.SessionClosed("s"),
        errors.TaskNotCancellable("t", "completed"),
        errors.LimitExceeded("The queue is full."),
        errors.Unavailable("Shutting down."),
        errors.InvalidRequest("Bad."),
    ],
    ids=type,
)
def test_a_refusal_asked_of_an_actor_leaves_no_traceback(
    refuser, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    with caplog.at_level(logging.DEBUG), pytest.raises(type(error)):
        refuser.refuse(error).get(timeout=10)
    assert not tracebacks(caplog)


@pytest.mark.parametrize(
    "error",
    [
        errors.StorageError("The database failed."),
        errors.DatabaseUnavailable("The connection failed."),
        errors.IllegalTransition("running -> pending"),
        KeyError("a bug"),
    ],
    ids=type,
)
def test_bugs_and_outages_asked_of_an_actor_keep_their_traceback(
    refuser, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    with caplog.at_level(logging.DEBUG), pytest.raises(type(error)):
        refuser.refuse(error).get(timeout=10)
    [record] = tracebacks(caplog)
    assert record.name == "pykka" and record.exc_info[1] is error


def test_http_404_and_409_leave_no_traceback(
    client: Client, workdir: str, caplog: pytest.LogCaptureFixture
) -> None:
    session = client.open_session(workdir)
    task = client.wait_terminal(client.submit(session["id"], "[[say: done]]")["id"])
    gone = session["id"][:-4] + "0000"
    with caplog.at_level(logging.DEBUG):
        answers = [
            client.post(f"/sessions/{gone}/tasks", json={"command": "x"}).status_code,
            client.get(f"/sessions/{gone}").status_code,
            client.get(f"/tasks/{task['id'][:-4]}0000").status_code,
            client.delete(f"/tasks/{task['id']}").status_code,
            client.delete(f"/sessions/{session['id']}").status_code,
            client.post(f"/sessions/{session['id']}/tasks", json={"command": "x"}).status_code,
        ]
    assert answers == [404, 404, 404, 409, 200, 409]
    assert not tracebacks(caplog)
    assert "Traceback" not in caplog.text
