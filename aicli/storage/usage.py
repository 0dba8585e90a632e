"""What each principal stores, kept as it is written, for its ``max_stored_bytes``.

The measure is the characters of the text the database keeps for it: prompts
(commands), answers and errors, metadata (its JSON), the data of task events,
and a session's own metadata and system prompt. Each session row carries its
sum in ``stored_bytes``, added to in the transaction of each write (the
statement that counts a new task, one more after an append of events), and
taken from by retention (``retention``) in the transaction that deletes. A
principal's use is the sum over its sessions, as its cost is: one indexed read.
A sum over the stored columns at each submit would read every byte it counts.
"""

from __future__ import annotations

from typing import NamedTuple

from aicli.errors import StorageLimitExceeded
from aicli.storage.engine import Engine

ADD_TO_SESSION_OF_TASK = (
    "UPDATE sessions SET stored_bytes = stored_bytes + ?"
    " WHERE id = (SELECT session_id FROM tasks WHERE id = ?)"
)
# A principal's use: the sum over the sessions it opened (a subquery of a principal's row).
OF_PRINCIPAL = "(SELECT COALESCE(SUM(stored_bytes), 0) FROM sessions WHERE owner = principals.id)"
# The SQL of what a task row stores, as ``text_size`` counts it.
TASK_SIZE = (
    "LENGTH(command) + COALESCE(LENGTH(output), 0) + COALESCE(LENGTH(error), 0)"
    " + COALESCE(LENGTH(metadata), 0)"
)


def text_size(*values: object) -> int:
    """The characters of the text among ``values`` (as stored: other values count nothing)."""
    return sum(len(value) for value in values if isinstance(value, str))


class Limit(NamedTuple):
    """A session owner's ``max_stored_bytes``."""

    owner: str
    name: str
    max_stored_bytes: int


# The limit of a session's owner, or of a principal; the owner's use; its principal row, locked.
_LIMIT_OF_SESSION = (
    "SELECT principals.id, principals.name, principals.max_stored_bytes FROM sessions"
    " JOIN principals ON principals.id = sessions.owner WHERE sessions.id = ?"
)
_LIMIT_OF_OWNER = "SELECT id, name, max_stored_bytes FROM principals WHERE id = ?"
_USED = "SELECT COALESCE(SUM(stored_bytes), 0) FROM sessions WHERE owner = ?"
_LOCK_PRINCIPAL = "SELECT 1 FROM principals WHERE id = ? FOR UPDATE"


def limit_of(
    engine: Engine, *, session_id: str | None = None, owner: str | None = None
) -> Limit | None:
    """First in a write that adds to a session (``session_id``) or opens one (``owner``): the
    owner's limit, if it has one, and on PostgreSQL the owner's principal row locked, so that
    ``ensure_room`` reads a use that no other write of that owner changes before this one
    commits.

    Checked against the principal read when the request was authenticated, every
    submit racing with others saw the same room and all of them got in. SQLite's
    write transaction admits one writer at a time; on PostgreSQL the row lock makes
    the writes of one owner take turns, in all its sessions and on every node. It
    is taken before the session's row, in the order a revocation takes them.
    """
    if session_id is not None:
        row = engine.execute(_LIMIT_OF_SESSION, (session_id,)).fetchone()
    else:
        row = None if owner is None else engine.execute(_LIMIT_OF_OWNER, (owner,)).fetchone()
    if row is None or row[2] is None:
        return None
    limit = Limit(*row)
    if engine.is_postgres:
        engine.execute(_LOCK_PRINCIPAL, (limit.owner,))
    return limit


def ensure_room(engine: Engine, limit: Limit, adding: int) -> None:
    """``StorageLimitExceeded`` if ``adding`` more would take the owner past its limit."""
    used = engine.execute(_USED, (limit.owner,)).fetchone()[0]
    if used + adding > limit.max_stored_bytes:
        raise StorageLimitExceeded(
            f"Principal '{limit.name}' stores {used} bytes of its max_stored_bytes of"
            f" {limit.max_stored_bytes}, and {adding} more would pass it.",
            {"max_stored_bytes": limit.max_stored_bytes, "stored_bytes": used, "adding": adding},
        )
