"""The stream cap: slots come back exactly once, however a stream ends."""

from __future__ import annotations

import gc

import pytest

from aicli import Runtime
from aicli.errors import Unavailable
from aicli.http import create_app
from aicli.http.events import EventStream
from aicli.http.slots import Slots

pytest_plugins = ("tests.http_fixtures",)


def test_slots_refuse_past_the_limit_and_come_back_once():
    slots = Slots(2)
    first, second = slots.acquire(), slots.acquire()
    with pytest.raises(Unavailable) as refused:
        slots.acquire()
    assert refused.value.retry_after == 1
    first.release()
    first.release()
    assert slots.in_use == 1
    with slots.acquire():
        assert slots.in_use == 2
    second.release()
    assert slots.in_use == 0


def test_a_stream_that_is_never_iterated_still_gives_its_slot_back():
    slots = Slots(1)
    stream = EventStream(
        runtime=None,  # never reached: the body is dropped before the first frame
        frames=None,
        task_id="t",
        after=0,
        replay=[],
        slot=slots.acquire(),
        keepalive_s=15,
        client_gone=lambda: False,
    )
    assert slots.in_use == 1
    del stream
    gc.collect()
    assert slots.in_use == 0


def test_a_closed_stream_gives_its_slot_back_once():
    slots = Slots(1)
    stream = EventStream(
        runtime=None,
        frames=None,
        task_id="t",
        after=0,
        replay=[],
        slot=slots.acquire(),
        keepalive_s=15,
        client_gone=lambda: True,
    )
    assert next(iter(stream)).startswith(b":")
    stream.close()
    stream.close()
    assert slots.in_use == 0
    slots.acquire()


def test_two_apps_can_share_one_runtime(make_runtime):
    runtime: Runtime = make_runtime()
    create_app(runtime)
    create_app(runtime)
