"""Per-principal ``max_stored_bytes`` (1.2): what a principal's sessions store is counted as
it is written, and a submit that would pass the limit is refused with 413."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aicli.contract import PrincipalCreate, PrincipalLimits, TaskStatus
from aicli.storage import Store
from aicli.testing import store_sql
from aicli.testing.store_sql import submit_task
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
    task, _ = submit_task(store, session.id, command="hello", metadata={"a": "b"})
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
    return [row[0] for row in store_sql.rows(store, sql, (task_id,))]


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
    first, _ = submit_task(store, session.id, command="runs")
    store.start_next_task(session.id)
    store.finish_task(first.id, TaskStatus.FAILED, error="it broke")
    cancelled, _ = submit_task(store, session.id, command="cancelled", metadata={"a": "b"})
    store.cancel_pending(cancelled.id, "cancelled by a test")
    for n in range(3):
        submit_task(store, session.id, command=f"closed with it {n}")
    store.close_session(session.id, "the session closed")
    assert store.principals.get(owner.id).stored_bytes > 0
    assert store.retention.prune(utcnow() + timedelta(seconds=1)).tasks == 5
    assert store.principals.get(owner.id).stored_bytes == 2  # its metadata, "{}"


def test_the_limit_is_checked_in_the_write_so_racers_cannot_pass_it(
    store: Store, tmp_path: Path
) -> None:
    """Checked against the principal read at authentication, twenty submits at once all saw
    the same room and all got in: the store checks the owner's limit in the insert's write."""
    from aicli.errors import StorageLimitExceeded

    owner = store.principals.create(
        PrincipalCreate(name="erin", limits=PrincipalLimits(max_stored_bytes=5000))
    )
    first = store.create_session(workdir=str(tmp_path), owner=owner.id)
    second = store.create_session(workdir=str(tmp_path), owner=owner.id)
    submit_task(store, first.id, command="x" * 2000)
    submit_task(store, second.id, command="y" * 2000)
    with pytest.raises(StorageLimitExceeded) as refused:
        submit_task(store, first.id, command="z" * 2000)
    assert refused.value.details["max_stored_bytes"] == 5000
    assert refused.value.details["stored_bytes"] == store.principals.get(owner.id).stored_bytes
    assert store.principals.get(owner.id).stored_bytes < 5000
    # A principal without a limit, and a session without an owner, are not held back.
    free = store.create_session(workdir=str(tmp_path))
    submit_task(store, free.id, command="z" * 20_000)


def test_a_stale_principal_lets_no_second_submit_past_the_limit(make_runtime, workdir) -> None:
    runtime = make_runtime()
    principal = runtime.store.principals.create(
        PrincipalCreate(name="frank", limits=PrincipalLimits(max_stored_bytes=3000))
    )
    read_at_authentication = runtime.store.principals.get(principal.id)
    session = runtime.open_session(workdir=workdir, principal=read_at_authentication)
    runtime.submit_task(session.id, "x" * 2000, principal=read_at_authentication)
    from aicli.errors import StorageLimitExceeded

    with pytest.raises(StorageLimitExceeded):
        runtime.submit_task(session.id, "y" * 2000, principal=read_at_authentication)


def test_a_retried_submit_gets_its_task_even_at_the_limit(url, workdir) -> None:
    """The same request under the same Idempotency-Key returns the first task: the task that
    took the principal to its limit is no reason to refuse the retry that asks for it."""
    admin = Client(url, token=ROOT_TOKEN)
    created = admin.post(
        "/principals", json={"name": "gina", "limits": {"max_stored_bytes": 3000}}
    ).json()
    gina = Client(url, token=created["token"])
    session = gina.post("/sessions", json={"workdir": workdir}).json()
    path = f"/sessions/{session['id']}/tasks"
    body = {"command": "[[say: ok]]" + " " * 2000}
    first = gina.post(path, json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 202
    again = gina.post(path, json=body, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    other = gina.post(path, json=body, headers={"Idempotency-Key": "k2"})
    error_of(other, 413, "storage_limit_exceeded")


def test_concurrent_submits_in_several_sessions_stop_at_the_limit(
    store: Store, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from aicli.errors import StorageLimitExceeded

    owner = store.principals.create(
        PrincipalCreate(name="hank", limits=PrincipalLimits(max_stored_bytes=3500))
    )
    sessions = [store.create_session(workdir=str(tmp_path), owner=owner.id) for _ in range(4)]

    def submit(n: int) -> bool:
        try:
            submit_task(store, sessions[n % 4].id, command=str(n) * 1000)
        except StorageLimitExceeded:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        accepted = list(pool.map(submit, range(8)))
    assert accepted.count(True) == 3
    assert store.principals.get(owner.id).stored_bytes <= 3500


def test_an_open_past_max_stored_bytes_is_413(url, workdir) -> None:
    """A session's metadata and system prompt are stored too: a principal at its limit opened
    and closed sessions of a megabyte of metadata each, with nothing to stop it."""
    admin = Client(url, token=ROOT_TOKEN)
    created = admin.post(
        "/principals", json={"name": "ivy", "limits": {"max_stored_bytes": 3000}}
    ).json()
    ivy = Client(url, token=created["token"])
    first = ivy.post("/sessions", json={"workdir": workdir, "metadata": {"m": "x" * 2000}})
    assert first.status_code == 201
    assert ivy.delete(f"/sessions/{first.json()['id']}").status_code == 200
    for body in (
        {"workdir": workdir, "metadata": {"m": "y" * 2000}},
        {"workdir": workdir, "append_system_prompt": "z" * 2000},
    ):
        refused = ivy.post("/sessions", json=body)
        assert "max_stored_bytes" in error_of(refused, 413, "storage_limit_exceeded")
    assert admin.get(f"/principals/{created['id']}").json()["stored_bytes"] < 3000
    assert ivy.post("/sessions", json={"workdir": workdir}).status_code == 201
