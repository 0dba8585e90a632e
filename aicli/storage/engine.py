"""How every store call runs: one short transaction, serialised where SQLite needs it.

The concurrency story:

* A call checks a pooled connection out for its duration (Peewee keeps it in
  thread-local state), so any thread may call the store and no connection is
  ever shared by two threads at once.
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
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
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

from aicli.errors import StorageError
from aicli.storage.database import redact_url

T = TypeVar("T")

MAX_ATTEMPTS = 8
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_PG_TRANSIENT = frozenset({"40001", "40P01", "55P03"})


class Engine:
    def __init__(self, db: Database, url: str) -> None:
        self.db = db
        self.url = url
        self.is_postgres = isinstance(db, PostgresqlDatabase)
        self._write_lock = contextlib.nullcontext() if self.is_postgres else threading.Lock()
        self._closed = False

    def read(self, work: Callable[[], T], *, snapshot: bool = False) -> T:
        """Run ``work``; with ``snapshot`` all its statements see one state of the database."""
        return self._run(work, write=False, snapshot=snapshot)

    def write(self, work: Callable[[], T]) -> T:
        """Run ``work`` in one write transaction; it may run again after a transient failure."""
        return self._run(work, write=True, snapshot=True)

    def ping(self) -> None:
        self.read(lambda: self.db.execute_sql("SELECT 1").fetchone())

    def close(self) -> None:
        self._closed = True
        self.db.close_all()

    def _run(self, work: Callable[[], T], *, write: bool, snapshot: bool) -> T:
        if self.db.in_transaction():
            return work()
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if self._closed:
                raise StorageError("The store is closed.")
            try:
                with self.db.connection_context(), self._transaction(write, snapshot):
                    return work()
            except IntegrityError:
                raise
            except OperationalError as exc:
                if attempt == MAX_ATTEMPTS or not self._is_transient(exc):
                    raise self._storage_error(exc) from exc
            except (DatabaseError, InterfaceError, MaxConnectionsExceeded) as exc:
                raise self._storage_error(exc) from exc
            time.sleep(min(0.2, 0.005 * 2**attempt) * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _transaction(self, write: bool, snapshot: bool) -> Iterator[None]:
        if write:
            begin: dict[str, Any] = {} if self.is_postgres else {"lock_type": "IMMEDIATE"}
            with self._write_lock, self.db.atomic(**begin):
                yield
        elif snapshot:
            begin = {"isolation_level": "REPEATABLE READ"} if self.is_postgres else {}
            with self.db.atomic(**begin):
                yield
        else:
            yield

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
        text = str(getattr(exc, "orig", exc)).strip()
        detail = text.splitlines()[0] if text else type(exc).__name__
        return StorageError(
            f"The database at {redact_url(self.url)} failed: {detail}",
            {"error": type(exc).__name__},
        )
