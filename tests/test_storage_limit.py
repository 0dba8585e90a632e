"""Per-principal ``max_stored_bytes`` (1.2): what a principal's sessions store is counted as
it is written, and a submit that would pass the limit is refused with 413."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aicli.contract import PrincipalCreate, PrincipalLimits, TaskStatus
from aicli.storage import Store
from tests.http_server import Client, error_of, serving

pytest_plugins = ("tests.http_fixtures", "tests.storage_fixtures")

ROOT_TOKEN = "root-token"


def test_a_principals_stored_bytes_follow_its_writes(store: Store, tmp_path: Path) -> None:
    alice = store.principals.create(
        PrincipalCreate(name="alice", limits=PrincipalLimits(max_stored_bytes=10_000))
    )
    other = store.principals.create(PrincipalCreate(name="bob"))
    session = store.create_session(workdir=str(tmp_path), owner=alice.id, metadata={"k": "v"})
    store.create_session(workdir=str(tmp_path), owner=other.id, metadata={"big": "x" * 500})
    assert store.principals.get(alice.id).stored_bytes == len('{"k":"v"}')
    task, _ = store.create_task(session.id, command="hello", metadata={"a": "b"})
    store.append_events(task.id, [("message", {"text": "x" * 100})])
    store.start_next_task(session.id)
    store.finish_task(task.id, TaskStatus.COMPLETED, output="y" * 1000)
    found = store.principals.get(alice.id)
    events = store.list_events(task.id)
    event_text = sum(len(store_text) for store_text in _stored_event_texts(store, task.id))
    assert len(events) == 4 and event_text > 100
    assert found.stored_bytes == len('{"k":"v"}') + len("hello") + len('{"a":"b"}') + 1000 + (
        event_text
    )
    assert found.limits.max_stored_bytes == 10_000
    assert store.principals.get(other.id).stored_bytes == len('{"big":"' + "x" * 500 + '"}')


def _stored_event_texts(store: Store, task_id: str) -> list[str]:
    sql = "SELECT data FROM task_events WHERE task_id = ?"
    return store._engine.read(lambda: [row[0] for row in store._engine.execute(sql, (task_id,))])


@pytest.fixture
def url(make_runtime, tmp_path) -> Iterator[str]:
    with serving(make_runtime(api_token=ROOT_TOKEN)) as base:
        yield base


def test_a_submit_past_max_stored_bytes_is_413(url, workdir) -> None:
    admin = Client(url, token=ROOT_TOKEN)
    created = admin.post(
        "/principals", json={"name": "carol", "limits": {"max_stored_bytes": 3000}}
    ).json()
    assert created["limits"]["max_stored_bytes"] == 3000 and created["stored_bytes"] == 0
    carol = Client(url, token=created["token"])
    session = carol.post("/sessions", json={"workdir": workdir}).json()
    path = f"/sessions/{session['id']}/tasks"
    assert carol.post(path, json={"command": "[[say: ok]]", "metadata": {}}).status_code == 202
    refused = carol.post(path, json={"command": "x" * 2000, "metadata": {"m": "y" * 1000}})
    assert "max_stored_bytes" in error_of(refused, 413, "storage_limit_exceeded")
    assert refused.json()["error"]["details"]["max_stored_bytes"] == 3000
    # Nothing was taken; a small task still fits, and the admin sees the count.
    assert carol.post(path, json={"command": "[[say: small]]"}).status_code == 202
    seen = admin.get(f"/principals/{created['id']}").json()["stored_bytes"]
    assert 2 * len("[[say: ok]]") < seen < 3000


def test_every_write_counts_so_pruning_all_of_it_comes_back_to_zero(
    store: Store, tmp_path: Path
) -> None:
    from datetime import timedelta

    from aicli.contract import utcnow

    owner = store.principals.create(PrincipalCreate(name="dave"))
    session = store.create_session(workdir=str(tmp_path), owner=owner.id)
    first, _ = store.create_task(session.id, command="runs")
    store.start_next_task(session.id)
    store.finish_task(first.id, TaskStatus.FAILED, error="it broke")
    cancelled, _ = store.create_task(session.id, command="cancelled", metadata={"a": "b"})
    store.cancel_pending(cancelled.id, "cancelled by a test")
    for n in range(3):
        store.create_task(session.id, command=f"closed with it {n}")
    store.close_session(session.id, "the session closed")
    assert store.principals.get(owner.id).stored_bytes > 0
    assert store.retention.prune(utcnow() + timedelta(seconds=1)).tasks == 5
    assert store.principals.get(owner.id).stored_bytes == 2  # its metadata, "{}"
