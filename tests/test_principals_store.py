"""Principals in the store: tokens kept only as hashes, found by them, revoked at once."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from aicli import policy
from aicli.contract import PrincipalCreate, PrincipalLimits, Role, TaskStatus
from aicli.errors import PrincipalNotFound
from aicli.storage import Store
from aicli.testing import store_sql
from aicli.testing.store_sql import submit_task

pytest_plugins = ("tests.storage_fixtures",)


def test_a_token_is_shown_once_kept_as_a_hash_and_finds_its_principal(
    store: Store, tmp_path: Path
) -> None:
    limits = PrincipalLimits(max_sessions=2, budget_usd=1.5)
    made = store.principals.create(PrincipalCreate(name="ana", limits=limits))
    assert made.token and made.token.startswith("aicli_") and len(made.token) >= 6 + 43
    assert made.role == Role.USER and made.revoked_at is None
    assert made.limits == msgspec.structs.replace(limits, policy=policy.USER_DEFAULT)
    found = store.principals.by_token(made.token)
    assert found is not None and found.id == made.id and found.token is None
    assert store.principals.by_token(made.token + "x") is None
    assert store.principals.by_token("") is None
    stored = store_sql.rows(store, "SELECT * FROM principals")
    assert made.token not in repr(stored)
    if not store.is_postgres:  # and not in the file's bytes either
        store.close()
        raw = b"".join(p.read_bytes() for p in Path(store.database_url[10:]).parent.glob("*"))
        assert made.token.encode() not in raw


def test_revoking_stops_the_token_at_once_and_keeps_the_row(store: Store) -> None:
    made = store.principals.create(PrincipalCreate(name="bo", role=Role.ADMIN))
    revoked = store.principals.revoke(made.id)
    assert revoked.revoked_at is not None
    assert store.principals.by_token(made.token) is None
    assert store.principals.get(made.id).revoked_at == revoked.revoked_at
    assert store.principals.revoke(made.id).revoked_at == revoked.revoked_at  # again: as is
    with pytest.raises(PrincipalNotFound):
        store.principals.revoke("nobody")
    with pytest.raises(PrincipalNotFound):
        store.principals.get("nobody")


def test_principals_page_and_sum_the_cost_of_their_sessions(store: Store, tmp_path: Path) -> None:
    made = [store.principals.create(PrincipalCreate(name=f"p{i}")) for i in range(5)]
    first = store.principals.list(limit=2)
    rest = store.principals.list(limit=10, cursor=first.next_cursor)
    assert [p.id for p in [*first.data, *rest.data]] == [p.id for p in made[::-1]]
    assert first.has_more and not rest.has_more
    owner = made[0]
    for cost in (0.25, 0.5):
        session = store.create_session(workdir=str(tmp_path), owner=owner.id)
        task, _ = submit_task(store, session_id=session.id, command="c")
        store.start_next_task(session.id)
        store.finish_task(task.id, TaskStatus.COMPLETED, cost_usd=cost)
    assert store.get_session(session.id).owner == owner.id
    assert store.principals.get(owner.id).total_cost_usd == 0.75
    assert store.principals.get(made[1].id).total_cost_usd == 0.0
