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
    stream = _holding_a_slot(slots, client_gone=False)
    assert slots.in_use == 1
    del stream
    gc.collect()
    assert slots.in_use == 0


def test_a_closed_stream_gives_its_slot_back_once():
    slots = Slots(1)
    stream = _holding_a_slot(slots, client_gone=True)
    assert next(iter(stream)).startswith(b":")
    stream.close()
    stream.close()
    assert slots.in_use == 0
    slots.acquire()


def _holding_a_slot(slots: Slots, *, client_gone: bool) -> EventStream:
    """A stream over an empty replay holding one of ``slots``. Its runtime is never reached:
    the tests drop it unread, or read one frame with the client already gone."""
    return EventStream(
        runtime=None,
        frames=None,
        task_id="t",
        after=0,
        replay=[],
        slot=slots.acquire(),
        keepalive_s=15,
        client_gone=lambda: client_gone,
    )


def test_two_apps_can_share_one_runtime(make_runtime):
    runtime: Runtime = make_runtime()
    create_app(runtime)
    create_app(runtime)


def test_a_stream_refused_for_want_of_a_slot_reads_nothing_first(
    make_runtime, workdir, monkeypatch
):
    """The first page (up to ``paging.PAGE_BYTES`` of events) was read, and its frames built,
    before the slot was asked for: each refused stream, past ``max_streams``, did it all."""
    from tests.http_server import local_test_client

    runtime: Runtime = make_runtime()
    session = runtime.open_session(workdir=workdir)
    task, _ = runtime.submit_task(session.id, "[[say: hi]]", wait=30)
    reads: list[int] = []
    page = runtime.event_page
    monkeypatch.setattr(runtime, "event_page", lambda *a, **k: reads.append(1) or page(*a, **k))
    app = create_app(runtime)
    monkeypatch.setattr(Slots, "acquire", lambda self: (_ for _ in ()).throw(Unavailable("full")))
    for last_event_id in ("0", "1", "2"):
        refused = local_test_client(app).simulate_get(
            f"/tasks/{task.id}/events",
            headers={"Accept": "text/event-stream", "Last-Event-ID": last_event_id},
        )
        assert refused.status_code == 503
    assert reads == []
