"""A list's query struct reaches the store unchanged, field by field, whichever way it is asked.

The fields are iterated, not named: a filter added to a query struct of
``aicli.contract.queries`` (and read by its store method) is carried here from the
query string, the Python client and an embedder's keywords with no other edit.
Only a sample value for a new field's name is needed below, so that it is sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import requests

from aicli import Runtime, contract
from aicli.client import Client
from aicli.contract import (
    ApprovalListQuery,
    Page,
    PrincipalListQuery,
    SessionListQuery,
    SessionTaskListQuery,
    TaskListQuery,
    TaskSubmit,
)
from tests.http_server import serving

# A value for each field, as a query string spells it: none is the field's default.
SAMPLES = {
    "status": "pending",
    "owner": "p1",
    "created_after": "2026-01-01T00:00:00Z",
    "created_before": "2026-02-01T00:00:00Z",
    "limit": "7",
    "cursor": "abc",
    "order": "asc",
}
# path, struct, the store method the runtime calls (an attribute path from the store)
LISTS = [
    ("/tasks", TaskListQuery, "list_tasks", "list_tasks"),
    ("/sessions", SessionListQuery, "list_sessions", "list_sessions"),
    ("/approvals", ApprovalListQuery, "approvals.list", "approvals"),
    ("/principals", PrincipalListQuery, "principals.list", "list_principals"),
]


@pytest.fixture
def spied(runtime: Runtime, workdir: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """The runtime's store lists record the query they get and answer an empty page; the
    session and the task a filter names exist (an empty page makes the runtime look)."""
    session = runtime.open_session(workdir=workdir)
    task, _ = runtime.store.create_task(session.id, TaskSubmit(command="queued"))
    got: dict[str, Any] = {"session_id": session.id, "task_id": task.id}
    for _, _, where, _ in LISTS:
        owner, _, name = where.rpartition(".")
        target = runtime.store if not owner else getattr(runtime.store, owner)

        def spy(query: Any, where: str = where) -> Page:
            got[where] = query
            return Page(data=[], has_more=False, next_cursor=None)

        monkeypatch.setattr(target, name, spy)
    yield got


def _texts(kind: type, got: dict[str, Any]) -> dict[str, str]:
    texts = {**SAMPLES, "session_id": got["session_id"], "task_id": got["task_id"]}
    return {field: texts[field] for field in kind.__struct_fields__}


@pytest.mark.parametrize(("path", "kind", "where", "method"), LISTS)
def test_every_field_of_a_list_query_reaches_the_store_unchanged(
    runtime: Runtime, spied: dict, path: str, kind: type, where: str, method: str
) -> None:
    texts = _texts(kind, spied)
    expected = contract.query(texts, kind)
    # every field is set to something other than its default, so each is seen to travel
    assert all(getattr(expected, f) != getattr(kind(), f) for f in kind.__struct_fields__)
    fields = msgspec.structs.asdict(expected)
    with serving(runtime) as url, Client(url) as client:
        client_list = getattr(client, method)
        assert client_list(**fields).data == []  # the Python client, from keywords
        assert spied.pop(where) == expected
        assert client_list(expected).data == []  # the Python client, from the struct
        assert spied.pop(where) == expected
    getattr(runtime, method)(**fields)  # an embedder's keywords
    assert spied.pop(where) == expected
    getattr(runtime, method)(expected)  # an embedder's struct
    assert spied.pop(where) == expected


def test_a_sessions_task_list_is_the_task_list_narrowed_to_its_session(
    runtime: Runtime, spied: dict
) -> None:
    texts = _texts(SessionTaskListQuery, spied)
    session_id = spied["session_id"]
    with serving(runtime) as url:
        answer = requests.get(f"{url}/sessions/{session_id}/tasks", params=texts, timeout=10)
    assert answer.status_code == 200, answer.text
    given = msgspec.structs.asdict(contract.query(texts, SessionTaskListQuery))
    assert spied["list_tasks"] == TaskListQuery(session_id=session_id, **given)
