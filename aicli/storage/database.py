"""From a database URL to a configured Peewee database.

URLs go through ``playhouse.db_url``: ``sqlite:///relative/path.db``,
``sqlite:////absolute/path.db`` or ``postgresql://user:pw@host:port/name``;
query parameters are passed to the driver or pool (``?max_connections=40``).

PostgreSQL uses Peewee's connection pool: every store call checks a
connection out for its duration and returns it, so the number of connections
follows the number of threads *inside* the store at once rather than the number
of threads that ever touched it (Pykka runs an actor per thread, and a
PostgreSQL server allows about 100 connections). Its connections return
``TIMESTAMP`` values as aware UTC times, parsed by ``fromisoformat``, which is
several times cheaper than making psycopg2's naive ones aware. A connection
back from the pool within ``PG_TRUST_S`` is reused without the round trip
Peewee's pool makes to check it is alive; that check cost as much as the
store's own query. One idle longer is checked as before. One that died in
that window shows up as a failing statement; the engine then runs the call on
a fresh connection and has the idle ones checked (``distrust_idle``).

SQLite connections cost nothing to hold, so each thread opens one lazily (with
the pragmas below) and keeps it while it lives; the engine closes them all when
the store closes. That saves a pool checkout per call.

SQLite runs in WAL mode with ``synchronous=FULL``: every commit is fsynced, so
a task the API has accepted survives a power loss as well as a process crash,
as it does on PostgreSQL. Measured with 8 threads on one file, FULL costs about
a quarter of the write throughput of NORMAL (~1,100 against ~1,450 writes/s),
far above what Claude sessions produce; NORMAL could lose the last commits on
power loss.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

from peewee import Database, SqliteDatabase
from playhouse import db_url
from playhouse.pool import PooledPostgresqlDatabase
from psycopg2 import extensions as pg_extensions

from aicli.errors import InvalidRequest

SQLITE, POSTGRES = "sqlite", "postgres"
DATABASE_URL_ENV = "AICLI_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///aicli.db"

SQLITE_BUSY_TIMEOUT_MS = 10_000

# A connection's own page cache, in KiB (SQLite's default: 2000). Each thread keeps a
# connection, and a write by any of them makes the others' caches stale, so a large
# cache mostly held pages of large rows read once: with forty threads reading 10 MB
# answers, 80 MB that stayed. The operating system caches the file anyway.
SQLITE_CACHE_KIB = 256

# busy_timeout comes first: switching a fresh file to WAL needs a lock.
SQLITE_PRAGMAS = (
    ("busy_timeout", SQLITE_BUSY_TIMEOUT_MS),
    ("journal_mode", "wal"),
    ("foreign_keys", 1),
    ("synchronous", "full"),
    ("cache_size", -SQLITE_CACHE_KIB),
)

_SQLITE_DEFAULTS: dict[str, Any] = {
    "pragmas": SQLITE_PRAGMAS,
    # A connection serves only its thread, but the engine closes it from another.
    "check_same_thread": False,
}
# Pool settings in a URL mean nothing to per-thread SQLite connections.
_POOL_ONLY = ("max_connections", "stale_timeout")
# What PostgreSQL's parameters hold for the pool rather than the driver.
POOL_SETTINGS = (*_POOL_ONLY, "timeout")

_POSTGRES_DEFAULTS: dict[str, Any] = {
    "max_connections": 20,
    # Seconds a call waits for a free pooled connection before failing.
    "timeout": 10,
    "stale_timeout": 300,
    "connect_timeout": 5,
    # A node cut off from the database must not hold rows locked for long: a peer that
    # takes its sessions over waits on those locks. The TCP settings notice a dead
    # network within seconds; the server ends a transaction its client left open.
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 10_000,
}
# No transaction of ours waits on its client: one idle this long lost its client.
PG_IDLE_IN_TRANSACTION_MS = 5_000

PG_TRUST_S = 1.0
_PG_TIMESTAMP_OID = 1114


def _utc_timestamp(value: str | None, _cursor: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value + "+00:00")


_PG_UTC_TIMESTAMP = pg_extensions.new_type((_PG_TIMESTAMP_OID,), "UTC_TIMESTAMP", _utc_timestamp)


class PostgresPool(PooledPostgresqlDatabase):
    """Peewee's pool, with aware times and without a liveness round trip per checkout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._returned_at: dict[int, float] = {}
        super().__init__(*args, **kwargs)

    def _initialize_connection(self, conn: Any) -> None:
        pg_extensions.register_type(_PG_UTC_TIMESTAMP, conn)

    def _is_closed(self, conn: Any) -> bool:
        returned = self._returned_at.pop(id(conn), None)
        if returned is not None and time.monotonic() - returned < PG_TRUST_S:
            return (
                bool(conn.closed)
                or conn.info.transaction_status != pg_extensions.TRANSACTION_STATUS_IDLE
            )
        return super()._is_closed(conn)

    def _close(self, conn: Any, close_conn: bool = False) -> None:
        super()._close(conn, close_conn)
        if not conn.closed:
            self._returned_at[id(conn)] = time.monotonic()

    def distrust_idle(self) -> None:
        """Check every idle connection before its next use: one died, the rest may have too."""
        self._returned_at.clear()


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


def parse(url: str) -> tuple[str, dict[str, Any]]:
    """Which kind of database ``url`` names (``"sqlite"`` or ``"postgres"``), and how to open it.

    The parameters are the Peewee database's: for SQLite an absolute file
    path; for PostgreSQL the driver's, plus the ``POOL_SETTINGS``.
    """
    scheme = urlparse(url).scheme.lower().removesuffix("+pool")
    if scheme == "sqlite":
        kind, defaults = SQLITE, _SQLITE_DEFAULTS
    elif scheme in ("postgres", "postgresql"):
        kind, defaults = POSTGRES, _POSTGRES_DEFAULTS
    else:
        raise _invalid(url, "use sqlite:///path or postgresql://host/name")
    params = {**defaults, **db_url.parse(url, unquote_password=True, unquote_user=True)}
    name = params.get("database")
    if not name:
        raise _invalid(url, "it names no database")
    if kind == SQLITE:
        if name == ":memory:" or "mode=memory" in url:
            raise _invalid(url, "an in-memory SQLite database is private to one connection")
        # Connections open lazily: pin the file now, whatever the working directory becomes.
        params["database"] = os.path.abspath(name)
        for setting in _POOL_ONLY:
            params.pop(setting, None)
    else:
        given = params.get("options", "")
        timeout = f"-c idle_in_transaction_session_timeout={PG_IDLE_IN_TRANSACTION_MS}"
        params["options"] = f"{timeout} {given}".strip()
    return kind, params


def connect(url: str, *, max_connections: int | None = None) -> Database:
    """A Peewee database for ``url``; no connection is opened yet. ``max_connections``
    (PostgreSQL): a pool of that size, whatever the URL says."""
    kind, params = parse(url)
    if kind == POSTGRES and max_connections is not None:
        params["max_connections"] = max_connections
    return SqliteDatabase(**params) if kind == SQLITE else PostgresPool(**params)
