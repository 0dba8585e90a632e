"""Whether a new session may open: the server's ``max_sessions`` and its owner's.

A count read before the insert, in a transaction of its own, lets every racer
see the same room: twenty opens at once against a limit of two all saw one or
none open, and most got in. So the counts are read inside the write that
inserts the session, after a lock that makes the opens take turns:

* SQLite: the write transaction itself (``BEGIN IMMEDIATE``) already admits one
  writer at a time, in this process and in any other.
* PostgreSQL (several nodes share the database): the owner's principal row is
  locked (``FOR UPDATE``), then a transaction-scoped advisory lock that every
  open of the database takes, whoever its owner (opens are rare and short).
  The counts come in statements after the locks, so they see every open that
  held them before. The row lock also orders an open against its owner's
  revocation, which updates that row: an open either commits before the
  revocation (which then closes it too) or finds the principal revoked.

Only opens take these locks, always in this order, so they wait on no other writer.
"""

from __future__ import annotations

from aicli.contract import SessionStatus
from aicli.errors import LimitExceeded, Unauthorized
from aicli.storage.engine import Engine

# Any constant will do (the migrations' lock is another): every open of the database takes it.
_PG_OPEN_LOCK = 0x41_49_43_4C_53
# Open as the statuses that are, so the count reads the (status, ...) index, not every session.
OPEN_STATUSES = ", ".join(f"'{s}'" for s in SessionStatus if s != SessionStatus.CLOSED)
_OPEN = f"SELECT COUNT(*) FROM sessions WHERE status IN ({OPEN_STATUSES})"
_OWNED = _OPEN + " AND owner = ?"
_OWNER = "SELECT name, revoked_at FROM principals WHERE id = ?"
RETRY_AFTER_S = 60


def admit(engine: Engine, owner: str | None, max_open: int | None, max_owned: int | None) -> None:
    """Inside the write that inserts the session: ``LimitExceeded`` when either limit is
    reached, ``Unauthorized`` when its owner was revoked. An owner without a row (the
    configured token's root) has no limit of its own."""
    execute = engine.execute
    row = None
    if owner is not None:
        lock = " FOR UPDATE" if engine.is_postgres else ""
        row = execute(_OWNER + lock, (owner,)).fetchone()
        if row is not None and row[1] is not None:
            raise Unauthorized(f"Principal '{row[0]}' was revoked; it opens no session.")
    if engine.is_postgres:
        execute("SELECT pg_advisory_xact_lock(?)", (_PG_OPEN_LOCK,))
    owned = 0 if owner is None or max_owned is None else execute(_OWNED, (owner,)).fetchone()[0]
    if max_owned is not None and owned >= max_owned:
        name = owner if row is None else row[0]
        raise LimitExceeded(
            f"Principal '{name}' already has {max_owned} open sessions; close one.",
            retry_after=RETRY_AFTER_S,
            details={"max_sessions": max_owned},
        )
    if max_open is not None and execute(_OPEN).fetchone()[0] >= max_open:
        raise LimitExceeded(
            f"There are already {max_open} open sessions; close one first.",
            retry_after=RETRY_AFTER_S,
            details={"max_sessions": max_open},
        )
