"""One aicli server per SQLite file; PostgreSQL is shared by nodes.

A server that starts ends the Claude processes an earlier run on its database
left behind and fails the tasks that run left running. On SQLite there is no
lease to tell a live peer from a dead one, and SQLite files are not shared
between machines, so one server holds the file for its whole life: the lock
is taken before the server touches the database, and a second server is
refused before it touches anything.

The lock is ``flock`` on ``<database file>.lock``, beside the file the path
really names. The kernel drops it when the process dies, SIGKILL included, so a
dead server never blocks the next start. It belongs to one open file
description, so a second server in the same process is refused too. The file
keeps the holder's pid, for the message; it is never deleted, as deleting a
lock file races with the next server opening it.

On PostgreSQL several servers (nodes) share one database: each holds a lease
(``storage.nodes``) and touches only its own processes and the sessions it
claimed, so there is nothing to lock.
"""

from __future__ import annotations

import fcntl
import os
from typing import Protocol

from aicli.errors import AlreadyServing
from aicli.storage import database

_HOW_TO_PROCEED = (
    "Stop that server first, or start this one with another --database-url;"
    " one SQLite file serves one aicli server at a time (several share PostgreSQL)."
)


class ServerLock(Protocol):
    def release(self) -> None:
        """Give the lock up; a later server may then take it."""


def acquire(database_url: str) -> ServerLock:
    """The lock of ``database_url``'s SQLite file, or ``AlreadyServing`` if a live server
    holds it; nothing to hold on PostgreSQL."""
    kind, params = database.parse(database_url)
    if kind == database.SQLITE:
        return _FileLock.acquire(database_url, os.path.realpath(params["database"]) + ".lock")
    return _NoLock()


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


class _NoLock:
    """PostgreSQL's: several nodes share the database, each kept apart by its lease."""

    def release(self) -> None:
        pass
