"""The JSON body of an ended task is encoded once and shared by the responses that send it
at once (``aicli.http.bodies``), as long as one still does."""

from __future__ import annotations

import gc
import json
from datetime import UTC, datetime

import falcon

from aicli import contract
from aicli.contract import Task, TaskStatus
from aicli.http import media
from aicli.http.bodies import Bodies

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
    assert len(encoded) == 1 and list(bodies._sent) == ["t1"]
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
