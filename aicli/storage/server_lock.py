"""One aicli server per database, until several servers can share one.

A server that starts ends the Claude processes an earlier run on its database
left behind and fails the tasks that run left running. After a crash that is
recovery; with the earlier server alive it would wreck that server's work. So a
server holds this lock for its whole life, taken before it touches the
database, and a second server is refused before it touches anything.

The lock dies with its holder however the holder ends, SIGKILL included, so a
dead server never blocks the next start:

* SQLite: ``flock`` on ``<database file>.lock``, beside the file the path
  really names. The kernel drops it when the process dies. It belongs to one
  open file description, so a second server in the same process is refused
  too. The file keeps the holder's pid, for the message; it is never deleted,
  as deleting a lock file races with the next server opening it.
* PostgreSQL: a session-level advisory lock on a connection of its own (not
  from the pool), open for the server's life; PostgreSQL drops it when that
  connection ends. The key covers the schema too: servers in different
  schemas of one database share no rows. Keepalives are short on that
  connection, so PostgreSQL notices within about a minute that a server's
  machine vanished, instead of after the system default of two hours.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from typing import Any, Protocol

import psycopg2

from aicli.errors import AlreadyServing, DatabaseUnavailable, StorageError
from aicli.storage import database

# PostgreSQL probes the idle lock session after 30 s, and ends it after 3 probes unanswered.
_KEEPALIVES = (
    "SET tcp_keepalives_idle = 30",
    "SET tcp_keepalives_interval = 10",
    "SET tcp_keepalives_count = 3",
)
_HOW_TO_PROCEED = (
    "Stop that server first, or start this one with another --database-url;"
    " one database serves one aicli server at a time."
)


def _key(text: str) -> int:
    """31 bits of a hash: pg_locks shows advisory keys as unsigned, the functions take signed."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4]) & 0x7FFFFFFF


_NAMESPACE = _key("aicli serve")


class ServerLock(Protocol):
    def release(self) -> None:
        """Give the lock up; a later server may then take it."""


def acquire(database_url: str) -> ServerLock:
    """The lock of ``database_url``'s database, or ``AlreadyServing`` if a live server holds it."""
    kind, params = database.parse(database_url)
    if kind == database.SQLITE:
        return _FileLock.acquire(database_url, os.path.realpath(params["database"]) + ".lock")
    driver = {key: value for key, value in params.items() if key not in database.POOL_SETTINGS}
    driver["application_name"] = "aicli server lock"  # for operators reading pg_stat_activity
    return _AdvisoryLock.acquire(database_url, driver)


class _FileLock:
    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, database_url: str, path: str) -> _FileLock:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            raise AlreadyServing(
                f"Another aicli server{who} is using the database at"
                f" {database.redact_url(database_url)}: it holds the lock file {path}."
                f" {_HOW_TO_PROCEED}",
                {"lock_file": path},
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor drops the flock


def _read_pid(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return text if text.isdigit() else ""


class _AdvisoryLock:
    def __init__(self, conn: Any) -> None:
        self._conn: Any | None = conn

    @classmethod
    def acquire(cls, database_url: str, params: dict[str, Any]) -> _AdvisoryLock:
        where = database.redact_url(database_url)
        try:
            conn = psycopg2.connect(**params)
        except psycopg2.Error as exc:
            raise DatabaseUnavailable(
                f"The connection to the database at {where} failed: {_first_line(exc)}.",
                {"error": type(exc).__name__},
            ) from exc
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                holder = _take(cursor, conn.server_version)
        except psycopg2.Error as exc:
            conn.close()
            raise StorageError(
                f"The database at {where} failed: {_first_line(exc)}.",
                {"error": type(exc).__name__},
            ) from exc
        if holder is None:
            return cls(conn)
        conn.close()
        raise AlreadyServing(
            f"Another aicli server is using the database at {where}: {holder} holds its lock."
            f" {_HOW_TO_PROCEED}"
        )

    def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(psycopg2.Error):
                conn.close()  # ending the session drops the lock


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")


def _take(cursor: Any, server_version: int) -> str | None:
    """Take the lock; ``None`` once held, else who holds it, in words."""
    for statement in _KEEPALIVES:
        cursor.execute(statement)
    if server_version >= 140000:  # An idle-session limit must not end this idle session.
        cursor.execute("SET idle_session_timeout = 0")
    cursor.execute("SELECT current_schema()")
    key = _key(cursor.fetchone()[0])
    cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", (_NAMESPACE, key))
    if cursor.fetchone()[0]:
        return None
    cursor.execute(
        "SELECT a.pid, a.client_addr FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s"
        " AND l.objsubid = 2"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (_NAMESPACE, key),
    )
    row = cursor.fetchone()
    if row is None:  # It ended in between; whoever starts next takes the lock.
        return "another session"
    pid, client = row
    return f"PostgreSQL session {pid}" + (f" (from {client})" if client else "")
