"""Fixtures that run a test once on a SQLite file and once on a PostgreSQL schema.

Loaded with ``pytest_plugins = ("tests.storage_fixtures",)``. With
``AICLI_TEST_POSTGRES_URL`` set (as CI does) a missing server fails the run;
without it, the PostgreSQL half is skipped when no server answers.

Also a look at the queue columns no value carries (``tasks.seq``, ``sessions.last_seq``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aicli.storage import Store, open_store
from aicli.storage.engine import Engine
from aicli.testing.postgres import (
    PostgresUnavailable,
    fresh_schema_url,
    postgres_required,
    temporary_postgres_database,
)


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    try:
        with temporary_postgres_database() as url:
            yield url
    except PostgresUnavailable as exc:
        if postgres_required():
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'aicli.db'}"
    return fresh_schema_url(request.getfixturevalue("postgres_database"))


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    yield opened
    opened.close()


def _queue_numbers(store: Store | Engine, session_id: str) -> dict[str, int | None]:
    """``{task id: seq}`` of the session's tasks: their places in its queue (of a store, or
    of a bare engine before a store opens the database)."""
    engine = store.engine if isinstance(store, Store) else store
    sql = "SELECT id, seq FROM tasks WHERE session_id = ?"
    return engine.read(lambda: dict(engine.execute(sql, (session_id,)).fetchall()))


def _last_seq(store: Store | Engine, session_id: str) -> int:
    """The ``seq`` the session handed its newest task (0 before its first)."""
    engine = store.engine if isinstance(store, Store) else store
    sql = "SELECT last_seq FROM sessions WHERE id = ?"
    return engine.read(lambda: engine.execute(sql, (session_id,)).fetchone()[0])


# As fixtures, so that test modules need not import this plugin (and defeat its loading).


@pytest.fixture
def queue_numbers() -> Callable[[Store | Engine, str], dict[str, int | None]]:
    return _queue_numbers


@pytest.fixture
def last_seq() -> Callable[[Store | Engine, str], int]:
    return _last_seq
