"""From a database URL to a configured Peewee database.

URLs go through ``playhouse.db_url``: ``sqlite:///relative/path.db``,
``sqlite:////absolute/path.db`` or ``postgresql://user:pw@host:port/name``;
query parameters are passed to the driver or pool (``?max_connections=40``).

Both backends use Peewee's connection pools. Every store call checks a
connection out for its duration and returns it, so the number of connections
follows the number of threads *inside* the store at once rather than the number
of threads that ever touched it (Pykka runs an actor per thread, and a
PostgreSQL server allows about 100 connections). SQLite connections are opened
lazily, each with the pragmas below, and reused across threads one at a time.

SQLite runs in WAL mode with ``synchronous=FULL``: every commit is fsynced, so
a task the API has accepted survives a power loss as well as a process crash,
as it does on PostgreSQL. Measured with 8 threads on one file, FULL costs about
a quarter of the write throughput of NORMAL (~1,100 against ~1,450 writes/s),
far above what Claude sessions produce; NORMAL could lose the last commits on
power loss.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from peewee import Database
from playhouse import db_url
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

from aicli.errors import InvalidRequest

DATABASE_URL_ENV = "AICLI_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///aicli.db"

SQLITE_BUSY_TIMEOUT_MS = 10_000

# busy_timeout comes first: switching a fresh file to WAL needs a lock.
SQLITE_PRAGMAS = (
    ("busy_timeout", SQLITE_BUSY_TIMEOUT_MS),
    ("journal_mode", "wal"),
    ("foreign_keys", 1),
    ("synchronous", "full"),
)

_SQLITE_DEFAULTS: dict[str, Any] = {
    "pragmas": SQLITE_PRAGMAS,
    # A pooled connection serves one thread at a time, but not always the same one.
    "check_same_thread": False,
    "max_connections": None,
}

_POSTGRES_DEFAULTS: dict[str, Any] = {
    "max_connections": 20,
    # Seconds a call waits for a free pooled connection before failing.
    "timeout": 10,
    "stale_timeout": 300,
    "connect_timeout": 5,
}


def resolve_database_url(explicit: str | None = None) -> str:
    """``--database-url`` wins over ``AICLI_DATABASE_URL``, which wins over the default."""
    return explicit or os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL


def _invalid(url: str, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid 'database_url' {redact_url(url)!r}: {why}.", {"field": "database_url"}
    )


def redact_url(url: str) -> str:
    """The URL without its password, fit for logs and error messages."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)
    return parsed._replace(netloc=netloc).geturl()


def connect(url: str) -> Database:
    """A Peewee database for ``url``; no connection is opened yet."""
    scheme = urlparse(url).scheme.lower().removesuffix("+pool")
    if scheme == "sqlite":
        database_class: type[Database] = PooledSqliteDatabase
        defaults = _SQLITE_DEFAULTS
    elif scheme in ("postgres", "postgresql"):
        database_class = PooledPostgresqlDatabase
        defaults = _POSTGRES_DEFAULTS
    else:
        raise _invalid(url, "use sqlite:///path or postgresql://host/name")
    params = {**defaults, **db_url.parse(url, unquote_password=True, unquote_user=True)}
    name = params.get("database")
    if not name:
        raise _invalid(url, "it names no database")
    if scheme == "sqlite":
        if name == ":memory:" or "mode=memory" in url:
            raise _invalid(url, "an in-memory SQLite database is private to one connection")
        # Connections open lazily: pin the file now, whatever the working directory becomes.
        params["database"] = os.path.abspath(name)
    return database_class(**params)
