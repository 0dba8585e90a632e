"""The JSON body of an ended task is encoded once and shared by the responses that send it
at once (``aicli.http.bodies``), as long as one still does."""

from __future__ import annotations

import gc
import json
from datetime import UTC, datetime

import falcon
import falcon.testing

from aicli import contract
from aicli.contract import Task, TaskStatus
from aicli.http import media
from aicli.http.bodies import Bodies
from aicli.http.events import EventsResource
from aicli.http.slots import Slots

LARGE = "x" * (2 * media.PIECE)


def task(status: TaskStatus = TaskStatus.COMPLETED, output: str = LARGE) -> Task:
    return Task("t1", "s1", "c", status, output, created_at=datetime.now(UTC))


def sent(resp: falcon.Response) -> bytes:
    return resp.data if resp.stream is None else b"".join(resp.stream)


def test_responses_sending_a_large_ended_task_share_its_body(monkeypatch) -> None:
    encoded: list[Task] = []
    encode = contract.encode
    monkeypatch.setattr(contract, "encode", lambda value: encoded.append(value) or encode(value))
    bodies, first, second = Bodies(), falcon.Response(), falcon.Response()
    bodies.write(first, task())
    bodies.write(second, task())  # another read of the same task
    assert len(encoded) == 1 and list(bodies._sent) == [("task", "t1")]
    for resp in (first, second):
        body = sent(resp)
        assert json.loads(body)["output"] == LARGE and resp.content_length == str(len(body))
    del first, second, resp
    gc.collect()
    # Sent, it is not kept for a reader to come.
    assert not bodies._sent


def test_small_or_live_tasks_are_encoded_as_before() -> None:
    bodies = Bodies()
    for one in (task(output="ok"), task(TaskStatus.RUNNING, LARGE)):
        resp = falcon.Response()
        bodies.write(resp, one)
        assert json.loads(sent(resp))["output"] == one.output
        assert resp.content_type == media.JSON_TYPE
    assert not bodies._sent


def test_pages_of_events_of_an_ended_task_are_read_once_while_sent(
    make_runtime, workdir, monkeypatch
) -> None:
    """Sixty readers of the JSON events of a task with a 10 MB answer each read and encoded
    the page for themselves (466 MB at the peak, with thirty-two threads; now 292)."""
    runtime = make_runtime()
    session = runtime.open_session(workdir=workdir)
    task, _ = runtime.submit_task(session.id, f"[[big: {2 * media.PIECE}]]", wait=60)
    assert task.is_terminal
    reads: list[int] = []
    page = runtime.event_page
    monkeypatch.setattr(runtime, "event_page", lambda *a, **k: reads.append(1) or page(*a, **k))
    resource = EventsResource(runtime, Slots(1), Bodies())
    responses = [falcon.Response(), falcon.Response()]
    for resp in responses:
        req = falcon.testing.create_req()
        resource._write_page(req, resp, task.id, 0, 1000)
    assert len(reads) == 1
    first, second = (json.loads(sent(resp)) for resp in responses)
    assert first == second and any(len(json.dumps(e)) > media.PIECE for e in first["data"])
