"""Fixtures that run a test once on a SQLite file and once on a PostgreSQL schema.

Loaded with ``pytest_plugins = ("tests.storage_fixtures",)``. With
``AICLI_TEST_POSTGRES_URL`` set (as CI does) a missing server fails the run;
without it, the PostgreSQL half is skipped when no server answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aicli.storage import Store, open_store
from aicli.storage.testing import (
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
