"""How every store call runs: one short transaction, serialised where SQLite needs it.

The concurrency story:

* Peewee keeps connections in thread-local state, so any thread may call the
  store and no connection is ever shared by two threads at once. On PostgreSQL
  a call checks a pooled connection out for its duration; on SQLite each thread
  keeps its own (see ``database``).
* A read that is one statement runs without an explicit transaction: the
  statement is its own snapshot, and ``BEGIN``/``COMMIT`` would add two round
  trips to it.
* Writes are short transactions, never held across I/O or user code.
* SQLite allows one writer at a time. A process-local lock admits one writing
  thread at a time, and each write transaction starts with ``BEGIN IMMEDIATE``
  so the database write lock is taken up front, where ``busy_timeout`` waits for
  other processes. (A deferred transaction that upgrades to a write gets
  SQLITE_BUSY at once, without waiting.) WAL lets readers proceed alongside.
* PostgreSQL writes run at READ COMMITTED; the store keeps them correct with
  conditional updates and row locks. Reads that span several statements run in
  a REPEATABLE READ snapshot (SQLite: a deferred read transaction).
* What a lock or the server may still refuse transiently (SQLite busy/locked,
  PostgreSQL serialization failure, deadlock, lock timeout) is retried, with
  jittered backoff, a bounded number of times; a whole transaction is retried,
  never half of one. What remains is raised as ``StorageError``, so no
  "database is locked" reaches a client as such.
* A PostgreSQL connection can die under us (the server restarted, an admin
  terminated it); the pool learns of it only when a statement fails. That
  connection is thrown away, the idle ones are checked before their next use
  (they likely died with it), and the call runs once more on a fresh one:
  always for a read, and for a write whenever it cannot have committed. A
  write whose COMMIT itself got no answer may or may not have been saved, so
  it is never run twice. What a fresh connection does not cure is raised as
  ``DatabaseUnavailable`` (HTTP 503, retry later), never as a server fault.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from peewee import (
    Database,
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    PostgresqlDatabase,
)
from playhouse.pool import MaxConnectionsExceeded

from aicli.errors import DatabaseUnavailable, StorageError
from aicli.storage.database import redact_url

T = TypeVar("T")

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_PG_TRANSIENT = frozenset({"40001", "40P01", "55P03"})
# admin_shutdown, crash_shutdown, cannot_connect_now; class 08 is connection_exception.
_PG_GONE = frozenset({"57P01", "57P02", "57P03"})


class _Held:
    """A thread's SQLite connection, for ``Engine.close`` to find (connections take no weakrefs)."""

    __slots__ = ("conn", "__weakref__")

    def __init__(self, conn: Any) -> None:
        self.conn = conn


class _Attempt:
    """Runs ``work`` once and remembers whether it returned: then only COMMIT was left."""

    __slots__ = ("work", "returned")

    def __init__(self, work: Callable[[], Any]) -> None:
        self.work = work
        self.returned = False

    def run(self) -> Any:
        result = self.work()
        self.returned = True
        return result


class _ConnectionLost(Exception):
    """Inside the engine only: the attempt's connection died, ``error`` says how."""

    def __init__(self, error: Exception, *, at_commit: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.at_commit = at_commit


class Engine:
    def __init__(self, db: Database, url: str) -> None:
        self.db = db
        self.url = url
        self.is_postgres = isinstance(db, PostgresqlDatabase)
        self._write_lock = contextlib.nullcontext() if self.is_postgres else threading.Lock()
        self._write_begin: dict[str, Any] = {} if self.is_postgres else {"lock_type": "IMMEDIATE"}
        self._snapshot_begin: dict[str, Any] = (
            {"isolation_level": "REPEATABLE READ"} if self.is_postgres else {}
        )
        # What a thread holds dies with it, and so does its connection.
        self._local = threading.local()
        self._held: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._closed = False

    def read(self, work: Callable[[], T], *, snapshot: bool = False) -> T:
        """Run ``work``; with ``snapshot`` all its statements see one state of the database."""
        return self._run(work, write=False, snapshot=snapshot)

    def write(self, work: Callable[[], T], *, durable: bool = True) -> T:
        """Run ``work`` in one write transaction; it may run again after a transient failure.

        Or after its connection died before COMMIT; never once COMMIT was sent.
        ``durable=False`` commits without waiting for the disk (SQLite:
        ``synchronous=NORMAL`` for this commit; PostgreSQL: ``synchronous_commit
        off``): a crash of the process loses nothing, a power loss at most what
        was written since the last durable commit, which that next commit makes
        durable too. For what a later commit settles anyway (events of a turn
        still running, whose end is committed durably).
        """
        return self._run(work, write=True, snapshot=True, durable=durable)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement written with ``?`` placeholders; the driver's cursor.

        Through Peewee, so its error wrapping and query hooks still apply.
        """
        if self.is_postgres:
            sql = sql.replace("?", "%s")
        return self.db.execute_sql(sql, params)

    def ping(self) -> None:
        self.read(lambda: self.db.execute_sql("SELECT 1").fetchone())

    def close(self) -> None:
        self._closed = True
        if self.is_postgres:
            self.db.close_all()
            return
        self.db.close()
        for held in list(self._held):
            held.conn.close()

    def _run(
        self, work: Callable[[], T], *, write: bool, snapshot: bool, durable: bool = True
    ) -> T:
        if self.db.in_transaction():
            return work()
        reconnected = False
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if self._closed:
                raise StorageError("The store is closed.")
            try:
                return self._once(work, write, snapshot, durable)
            except _ConnectionLost as lost:
                if lost.at_commit or reconnected:
                    raise self._unavailable(lost.error, at_commit=lost.at_commit) from lost.error
                reconnected = True
                continue
            except IntegrityError:
                raise
            except OperationalError as exc:
                if attempt == MAX_ATTEMPTS or not self._is_transient(exc):
                    raise self._storage_error(exc) from exc
            except (DatabaseError, InterfaceError, MaxConnectionsExceeded) as exc:
                raise self._storage_error(exc) from exc
            time.sleep(min(0.2, 0.005 * 2**attempt) * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    def _once(self, work: Callable[[], T], write: bool, snapshot: bool, durable: bool) -> T:
        db = self.db
        if not self.is_postgres:
            if db.is_closed():
                db.connect()
                self._local.held = held = _Held(db.connection())
                self._held.add(held)
            return self._transaction(work, write, snapshot, durable)
        if db.is_closed():
            try:
                db.connect()
            except (OperationalError, InterfaceError) as exc:
                raise self._unavailable(exc) from exc
        conn = db.connection()
        attempt = _Attempt(work)
        try:
            return self._transaction(attempt.run, write, snapshot, durable)
        except (DatabaseError, InterfaceError) as exc:
            if not (conn.closed or _says_gone(exc)):
                raise
            log.warning("lost a connection to the database: %s", _detail(exc))
            db.manual_close()  # never back into the pool
            db.distrust_idle()
            raise _ConnectionLost(exc, at_commit=write and attempt.returned) from exc
        finally:
            db.close()

    def _transaction(
        self, work: Callable[[], T], write: bool, snapshot: bool, durable: bool = True
    ) -> T:
        if write and not durable:
            return self._lazy_write(work)
        if write:
            with self._write_lock, self.db.atomic(**self._write_begin):
                return work()
        if snapshot:
            with self.db.atomic(**self._snapshot_begin):
                return work()
        return work()

    def _lazy_write(self, work: Callable[[], T]) -> T:
        if self.is_postgres:
            with self.db.atomic(**self._write_begin):
                self.db.execute_sql("SET LOCAL synchronous_commit TO OFF")
                return work()
        with self._write_lock:
            self.db.execute_sql("PRAGMA synchronous = NORMAL")
            try:
                with self.db.atomic(**self._write_begin):
                    return work()
            finally:
                self.db.execute_sql("PRAGMA synchronous = FULL")

    def _is_transient(self, exc: Exception) -> bool:
        cause = getattr(exc, "orig", exc)  # Peewee keeps the driver's exception there.
        if self.is_postgres:
            return getattr(cause, "pgcode", None) in _PG_TRANSIENT
        code = getattr(cause, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
        message = str(cause).lower()
        return "locked" in message or "busy" in message

    def _storage_error(self, exc: Exception) -> StorageError:
        return StorageError(
            f"The database at {redact_url(self.url)} failed: {_detail(exc)}",
            {"error": type(exc).__name__},
        )

    def _unavailable(self, exc: Exception, *, at_commit: bool = False) -> DatabaseUnavailable:
        where, detail = redact_url(self.url), _detail(exc).rstrip(".")
        if at_commit:
            return DatabaseUnavailable(
                f"The connection to the database at {where} failed during COMMIT, so the"
                f" change may or may not have been saved: {detail}.",
                {"error": type(exc).__name__, "committed": "unknown"},
            )
        return DatabaseUnavailable(
            f"The connection to the database at {where} failed: {detail}.",
            {"error": type(exc).__name__},
        )


def _detail(exc: Exception) -> str:
    """The driver's first line: psycopg2 adds lines of guesses after it."""
    text = str(getattr(exc, "orig", exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _says_gone(exc: Exception) -> bool:
    """Whether PostgreSQL said it ended the session, even if the driver has not noticed yet."""
    code = getattr(getattr(exc, "orig", exc), "pgcode", None) or ""
    return code.startswith("08") or code in _PG_GONE
