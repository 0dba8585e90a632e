"""``max_sessions`` holds under racing opens: exactly the limit opens, the rest get 429.

Twenty threads open at once through ``Runtime.open_session`` (what the HTTP
route calls), on each database; on PostgreSQL also through two runtimes with
stores of their own on one database, as two nodes would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from aicli import Runtime
from aicli.contract import Principal, PrincipalCreate, PrincipalLimits
from aicli.errors import LimitExceeded, Unauthorized
from aicli.testing.postgres import fresh_schema_url

pytest_plugins = ("tests.storage_fixtures",)

OPENERS = 20


def _race(opens: list[Callable[[], object]]) -> tuple[int, list[LimitExceeded]]:
    """Run every open at once; how many opened, and the refusals."""
    start = threading.Barrier(len(opens))

    def one(open_session: Callable[[], object]) -> object:
        start.wait(timeout=30)
        try:
            return open_session()
        except LimitExceeded as refusal:
            return refusal

    with ThreadPoolExecutor(len(opens)) as pool:
        results = list(pool.map(one, opens))
    refused = [r for r in results if isinstance(r, LimitExceeded)]
    return len(results) - len(refused), refused


def _capped(runtime: Runtime, limit: int) -> Principal:
    limits = PrincipalLimits(max_sessions=limit)
    return runtime.create_principal(PrincipalCreate(name="capped", limits=limits))


def test_a_principal_opens_exactly_its_max_sessions_at_once(make_runtime, database_url, workdir):
    runtime = make_runtime(database_url=database_url, threads=OPENERS)
    capped = _capped(runtime, 2)
    opened, refused = _race(
        [lambda: runtime.open_session(workdir=workdir, principal=capped)] * OPENERS
    )
    assert opened == 2 and len(refused) == OPENERS - 2
    assert {r.details["max_sessions"] for r in refused} == {2}
    assert {r.retry_after for r in refused} == {60}
    assert "Principal 'capped' already has 2 open sessions" in refused[0].message
    assert runtime.store.open_session_count(capped.id) == 2


def test_the_server_opens_exactly_its_max_sessions_at_once(make_runtime, database_url, workdir):
    runtime = make_runtime(database_url=database_url, max_sessions=3)
    opened, refused = _race([lambda: runtime.open_session(workdir=workdir)] * OPENERS)
    assert opened == 3 and len(refused) == OPENERS - 3
    assert runtime.store.open_session_count() == 3


@pytest.fixture
def two_nodes(make_runtime, postgres_database) -> tuple[Runtime, Runtime]:
    """Two runtimes, each with its own store and pool, on one PostgreSQL database."""
    url = fresh_schema_url(postgres_database)
    return tuple(make_runtime(database_url=url, max_sessions=3) for _ in range(2))


def _on_both(nodes: tuple[Runtime, Runtime], open_on: Callable[[Runtime], object]) -> list:
    return [lambda node=node: open_on(node) for node in nodes for _ in range(OPENERS // 2)]


@pytest.mark.postgres
def test_two_nodes_together_open_exactly_a_principals_limit(two_nodes, workdir):
    capped = _capped(two_nodes[0], 2)
    opened, _ = _race(
        _on_both(two_nodes, lambda node: node.open_session(workdir=workdir, principal=capped))
    )
    assert opened == 2 and two_nodes[1].store.open_session_count(capped.id) == 2


@pytest.mark.postgres
def test_two_nodes_together_open_exactly_the_servers_limit(two_nodes, workdir):
    opened, refused = _race(_on_both(two_nodes, lambda node: node.open_session(workdir=workdir)))
    assert opened == 3 and {r.details["max_sessions"] for r in refused} == {3}
    assert two_nodes[0].store.open_session_count() == 3


@pytest.mark.postgres
def test_an_open_racing_its_owners_revocation_is_refused_or_closed(two_nodes, workdir):
    first, second = two_nodes
    user = second.create_principal(PrincipalCreate(name="leaving"))

    def open_one() -> object:
        try:
            return first.open_session(workdir=workdir, principal=user)
        except (Unauthorized, LimitExceeded) as refusal:
            return refusal

    with ThreadPoolExecutor(8) as pool:
        opens = [pool.submit(open_one) for _ in range(8)]
        second.revoke_principal(user.id)
        results = [f.result() for f in opens]
    assert all(isinstance(r, Unauthorized | LimitExceeded) or r.owner == user.id for r in results)
    assert first.store.open_session_count(user.id) == 0
