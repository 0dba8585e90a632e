"""What an ``Idempotency-Key`` stands for: the request it was first used with.

A key sent again with the same request returns the task it made; sent with
another (another body, or to another session), it is refused, as the IETF
Idempotency-Key draft and Stripe do, rather than answered with a task that is
not what was asked. A key is the caller's: it is looked for in the sessions of
the session's owner, so two principals never collide on one.

The request is kept as a fingerprint: SHA-256 of the session id and the
submitted fields as their columns hold them (so a body that decodes to the
same fields, in any key order or spelling of a number, is the same request).
Tasks accepted before fingerprints were stored (schema version 8) have none;
their fingerprint is made from their columns, which held their whole request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec

from aicli.contract import Task, TaskSubmit
from aicli.errors import IdempotencyKeyReused
from aicli.storage.engine import Engine
from aicli.storage.fields import to_db_float
from aicli.storage.rows import TASK_COLUMNS, task_from_row

_encode = msgspec.json.Encoder(order="sorted").encode
_SUBMITTED = TaskSubmit.__struct_fields__
_FIRST_USE = (
    f"SELECT {TASK_COLUMNS}, idempotency_fingerprint FROM tasks"
    " WHERE session_id = ? AND idempotency_key = ?"
)
# Led by the key's index: a key has at most one use an owner (this check keeps it so).
_ELSEWHERE = (
    "SELECT 1 FROM tasks WHERE idempotency_key = ? AND session_id <> ? AND EXISTS"
    " (SELECT 1 FROM sessions WHERE sessions.id = tasks.session_id AND owner {owner}) LIMIT 1"
)
_PG_KEY_LOCKS = 0x41_49_43_4B  # the advisory locks' first key: keys of one owner take turns


def fingerprint(session_id: str, submitted: Mapping[str, Any]) -> str:
    """Of the submit's fields by name (metadata a dict, no metadata an empty one)."""
    fields = {
        name: to_db_float(value) if isinstance(value, float) else value
        for name, value in submitted.items()
    }
    fields["metadata"] = dict(fields.get("metadata") or {})
    return hashlib.sha256(_encode([session_id, fields])).hexdigest()


def first_task(
    engine: Engine, session_id: str, owner: str | None, key: str, given: str
) -> Task | None:
    """Inside the submit's write, its session row locked: the task this request with
    ``key`` made before, or None if the owner never used ``key``; ``IdempotencyKeyReused``
    if it used it with another request (fingerprint ``given``).

    On PostgreSQL the owner's submits with one key take turns (an advisory lock named
    by both), so two sessions cannot both take a key first.
    """
    execute = engine.execute
    if engine.is_postgres:
        execute("SELECT pg_advisory_xact_lock(?, hashtext(?))", (_PG_KEY_LOCKS, f"{owner} {key}"))
    row = execute(_FIRST_USE, (session_id, key)).fetchone()
    if row is not None:
        task = task_from_row(row[:-1])
        first = row[-1] or fingerprint(session_id, {n: getattr(task, n) for n in _SUBMITTED})
        if first != given:
            raise IdempotencyKeyReused()
        return task
    sql = _ELSEWHERE.format(owner="IS NULL" if owner is None else "= ?")
    params = (key, session_id) if owner is None else (key, session_id, owner)
    if execute(sql, params).fetchone() is not None:
        raise IdempotencyKeyReused()
    return None
