"""Test support: throwaway PostgreSQL databases and schemas.

Tests of the store (and of anything built on it) run on SQLite and on
PostgreSQL. ``AICLI_TEST_POSTGRES_URL`` names an admin connection to a server
where databases may be created (default: trust auth on 127.0.0.1:5432, database
``test``); whether an unreachable server is a failure or a skip is the caller's
choice, through ``postgres_required()``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from urllib.parse import urlencode, urlparse

import psycopg2

POSTGRES_URL_ENV = "AICLI_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


class PostgresUnavailable(Exception):
    """The test PostgreSQL server did not answer."""


def postgres_admin_url() -> str:
    return os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL


def postgres_required() -> bool:
    """True when the environment names a server: then an unreachable one fails the run."""
    return bool(os.environ.get(POSTGRES_URL_ENV))


def _with_database(url: str, name: str, **query: str) -> str:
    parsed = urlparse(url)
    return parsed._replace(path=f"/{name}", query=urlencode(query)).geturl()


def _admin_connection(url: str) -> psycopg2.extensions.connection:
    try:
        conn = psycopg2.connect(url, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        raise PostgresUnavailable(f"PostgreSQL at {url} is unreachable: {exc}") from exc
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def temporary_postgres_database(admin_url: str | None = None) -> Iterator[str]:
    """Create a fresh database, yield its URL, drop it (and its connections) afterwards."""
    admin_url = admin_url or postgres_admin_url()
    name = f"aicli_test_{secrets.token_hex(6)}"
    admin = _admin_connection(admin_url)
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        try:
            yield _with_database(admin_url, name)
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def fresh_schema_url(database_url: str) -> str:
    """A URL whose connections work in a new, empty schema of ``database_url``'s database.

    Cheaper than a database per test and just as isolated.
    """
    schema = f"s_{secrets.token_hex(6)}"
    conn = _admin_connection(database_url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        conn.close()
    name = urlparse(database_url).path.lstrip("/")
    return _with_database(database_url, name, options=f"-csearch_path={schema}")
