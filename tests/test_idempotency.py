"""An Idempotency-Key stands for the request it was first used with: the same request gets
the first task again, another one (another body, or another session) 422."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from aicli.client import Client as PythonClient
from aicli.contract import PrincipalCreate
from aicli.errors import IdempotencyKeyReused
from aicli.storage import Store
from aicli.testing import store_sql
from aicli.testing.store_sql import submit_task
from tests.http_server import Client, error_of

pytest_plugins = ("tests.http_fixtures", "tests.storage_fixtures")

KEY = {"Idempotency-Key": "k1"}
BODY = {"command": "[[say: once]]", "metadata": {"a": "1", "b": "2"}, "timeout_s": 30}


def test_a_key_reused_with_another_body_is_422(client, workdir):
    path = f"/sessions/{client.open_session(workdir)['id']}/tasks"
    first = client.post(path, json=BODY, headers=KEY)
    assert first.status_code == 202
    for changed in (
        {**BODY, "command": "[[say: twice]]"},
        {**BODY, "metadata": {"a": "1"}},
        {**BODY, "timeout_s": 31},
        {"command": BODY["command"]},
    ):
        refused = client.post(path, json=changed, headers=KEY)
        message = error_of(refused, 422, "idempotency_key_reused")
        assert "another request" in message
        assert refused.json()["error"]["details"] == {"field": "Idempotency-Key"}
    # The same request, however its JSON is spelt, is still the first task's.
    same = {"timeout_s": 30.0, "metadata": {"b": "2", "a": "1"}, "command": BODY["command"]}
    retry = client.post(path, json=same, headers=KEY)
    assert retry.status_code == 200 and retry.json()["id"] == first.json()["id"]
    assert len(client.walk(path)) == 1


def test_a_key_reused_on_another_session_is_422(client, workdir, tmp_path):
    one = client.open_session(workdir)
    (tmp_path / "two").mkdir()
    two = client.open_session(str(tmp_path / "two"))
    first = client.post(f"/sessions/{one['id']}/tasks", json=BODY, headers=KEY)
    assert first.status_code == 202
    elsewhere = client.post(f"/sessions/{two['id']}/tasks", json=BODY, headers=KEY)
    error_of(elsewhere, 422, "idempotency_key_reused")
    assert client.walk(f"/sessions/{two['id']}/tasks") == []


def test_principals_keys_are_their_own(runtime, base_url, workdir):
    users = [
        Client(base_url, token=runtime.create_principal(PrincipalCreate(name=name)).token)
        for name in ("ana", "bo")
    ]
    made = []
    for user in users:
        session = user.open_session(workdir)
        made.append(user.post(f"/sessions/{session['id']}/tasks", json=BODY, headers=KEY))
    assert [r.status_code for r in made] == [202, 202]
    assert made[0].json()["id"] != made[1].json()["id"]


def _unfingerprinted(store: Store, task_id: str) -> None:
    """As a task accepted before schema version 8 holds its key: without a fingerprint."""
    sql = "UPDATE tasks SET idempotency_fingerprint = NULL WHERE id = ?"
    store_sql.write(store, sql, (task_id,))


def test_a_key_of_a_task_from_before_fingerprints_is_checked_by_its_columns(store, tmp_path):
    session = store.create_session(workdir=str(tmp_path))
    fields = {"command": "c", "timeout_s": 2.5, "metadata": {"k": "v"}}
    first, _ = submit_task(store, session.id, idempotency_key="old", **fields)
    _unfingerprinted(store, first.id)
    again, created = submit_task(store, session.id, idempotency_key="old", **fields)
    assert (again.id, created) == (first.id, False)
    with pytest.raises(IdempotencyKeyReused):
        submit_task(store, session.id, idempotency_key="old", **{**fields, "command": "d"})


def test_racing_uses_of_one_key_on_two_sessions_make_one_task(store: Store, tmp_path: Path):
    sessions = [store.create_session(workdir=str(tmp_path), owner="ana") for _ in range(2)]
    start = threading.Barrier(8)

    def submit(index: int) -> object:
        start.wait(timeout=30)
        try:
            return submit_task(store, sessions[index % 2].id, command="c", idempotency_key="k")
        except IdempotencyKeyReused as refusal:
            return refusal

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(submit, range(8)))
    made = {r[0].id for r in results if isinstance(r, tuple)}
    assert len(made) == 1
    assert sum(isinstance(r, tuple) and r[1] for r in results) == 1


def test_the_python_client_raises_the_runtimes_class(base_url, workdir):
    with PythonClient(base_url) as client:
        session = client.open_session(workdir=workdir)
        first = client.submit(session.id, "[[say: once]]", idempotency_key="py")
        assert client.submit(session.id, "[[say: once]]", idempotency_key="py").id == first.id
        with pytest.raises(IdempotencyKeyReused) as refused:
            client.submit(session.id, "[[say: other]]", idempotency_key="py")
        assert refused.value.code == "idempotency_key_reused"
