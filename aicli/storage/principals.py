"""Principals: who may call, with which role and limits, known by a hash of their token.

A token is ``aicli_`` and 43 URL-safe characters (256 random bits from
``secrets``). The store keeps only its SHA-256 and finds a caller by that hash:
one index lookup, the same work whether the token is right or wrong, and
nothing in the database that would let a reader call as anyone. A revoked
principal keeps its row (and its sessions their owner) but no lookup finds it.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import Any

from aicli.contract import Page, Principal, PrincipalCreate, PrincipalLimits, Role, new_id, utcnow
from aicli.errors import PrincipalNotFound
from aicli.storage import credentials, paging, usage
from aicli.storage.admission import OPEN_STATUSES
from aicli.storage.engine import Engine
from aicli.storage.fields import from_db_time, to_db_float, to_db_time

TOKEN_PREFIX = "aicli_"
_COLUMNS = (
    "id, name, role, workspace_root, max_sessions, max_pending_per_session, budget_usd,"
    " created_at, revoked_at,"
    " (SELECT COALESCE(SUM(total_cost_usd), 0) FROM sessions WHERE owner = principals.id),"
    f" max_stored_bytes, {usage.OF_PRINCIPAL},"
    " EXISTS (SELECT 1 FROM principal_credentials WHERE principal_id = principals.id)"
)
_INSERT = (
    "INSERT INTO principals (id, name, role, token_hash, workspace_root, max_sessions,"
    " max_pending_per_session, budget_usd, created_at, max_stored_bytes)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_BY_HASH = f"SELECT {_COLUMNS} FROM principals WHERE token_hash = ? AND revoked_at IS NULL"
_BY_ID = f"SELECT {_COLUMNS} FROM principals WHERE id = ?"
_REVOKE = "UPDATE principals SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
_REVOKED = "SELECT id FROM principals WHERE revoked_at IS NOT NULL"
_REVOKED_OWNERS = (
    f"SELECT DISTINCT owner FROM sessions WHERE status IN ({OPEN_STATUSES})"
    " AND owner IN (SELECT id FROM principals WHERE revoked_at IS NOT NULL)"
)


def _count(value: float | None) -> int | None:
    return None if value is None else int(value)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def principal_from_row(row: Sequence[Any]) -> Principal:
    (
        principal_id, name, role, workspace_root, max_sessions, max_pending, budget_usd,
        created_at, revoked_at, total_cost_usd, max_stored_bytes, stored_bytes, own_credentials,
    ) = row  # fmt: skip
    return Principal(
        id=principal_id,
        name=name,
        role=Role(role),
        workspace_root=workspace_root,
        limits=PrincipalLimits(
            max_sessions=max_sessions,
            max_pending_per_session=max_pending,
            budget_usd=budget_usd,
            max_stored_bytes=max_stored_bytes,
        ),
        created_at=from_db_time(created_at),
        revoked_at=None if revoked_at is None else from_db_time(revoked_at),
        total_cost_usd=float(total_cost_usd or 0.0),
        stored_bytes=int(stored_bytes or 0),
        own_credentials=bool(own_credentials),
    )


class Principals:
    """The ``principals`` table; reached as ``Store.principals``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._execute = engine.execute

    def create(self, request: PrincipalCreate) -> Principal:
        """A new principal, returned once with its ``token`` (which is never stored)."""
        token = new_token()
        given = request.limits or PrincipalLimits()
        limits = PrincipalLimits(  # counts arrive as whole floats (5.0): keep them as ints
            max_sessions=_count(given.max_sessions),
            max_pending_per_session=_count(given.max_pending_per_session),
            budget_usd=to_db_float(given.budget_usd),
            max_stored_bytes=_count(given.max_stored_bytes),
        )
        now = utcnow()
        principal = Principal(
            id=new_id(),
            name=request.name,
            role=request.role,
            workspace_root=request.workspace_root,
            limits=limits,
            created_at=now,
            token=token,
        )
        params = (
            principal.id,
            principal.name,
            principal.role,
            token_hash(token),
            principal.workspace_root,
            limits.max_sessions,
            limits.max_pending_per_session,
            limits.budget_usd,
            to_db_time(now),
            limits.max_stored_bytes,
        )
        self._engine.write(lambda: self._execute(_INSERT, params))
        return principal

    def by_token(self, token: str) -> Principal | None:
        """The live principal holding ``token``, or None (unknown or revoked)."""
        digest = token_hash(token)
        row = self._engine.read(lambda: self._execute(_BY_HASH, (digest,)).fetchone())
        return None if row is None else principal_from_row(row)

    def get(self, principal_id: str) -> Principal:
        row = self._engine.read(lambda: self._execute(_BY_ID, (principal_id,)).fetchone())
        if row is None:
            raise PrincipalNotFound(principal_id)
        return principal_from_row(row)

    def list(
        self, *, limit: int = paging.DEFAULT_LIMIT, cursor: str | None = None, order: str = "desc"
    ) -> Page:
        request = paging.page_request(limit, cursor, order)
        conditions, params = paging.window(request)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = (
            f"SELECT {_COLUMNS} FROM principals{where}"
            f" ORDER BY {paging.ordering(request.order)} LIMIT ?"
        )

        def read() -> Page:
            rows = self._execute(sql, [*params, request.limit + 1]).fetchall()
            return paging.page_of([principal_from_row(row) for row in rows], request)

        return self._engine.read(read, snapshot=True)

    def count(self) -> int:
        return self._engine.read(
            lambda: self._execute("SELECT COUNT(*) FROM principals").fetchone()[0]
        )

    def revoked(self) -> set[str]:
        """The ids of every revoked principal (there are few: principals are people)."""
        return self._engine.read(lambda: {row[0] for row in self._execute(_REVOKED)})

    def revoked_with_open_sessions(self) -> list[str]:
        """Revoked principals that still own an open session: revoked by ``aicli principals
        revoke``, which only writes the row (open sessions are few, so this is cheap)."""
        return self._engine.read(lambda: [row[0] for row in self._execute(_REVOKED_OWNERS)])

    def revoke(self, principal_id: str) -> Principal:
        """Revoke at once: the next request with its token is refused, and its own credentials
        are forgotten in the same commit. Revoked already: as is.

        Its sessions are closed by ``Store.revoke_principal``, which calls this in its write.
        """

        def write() -> Principal:
            self._execute(_REVOKE, (to_db_time(utcnow()), principal_id))
            self._execute(credentials.DELETE, (principal_id,))
            row = self._execute(_BY_ID, (principal_id,)).fetchone()
            if row is None:
                raise PrincipalNotFound(principal_id)
            return principal_from_row(row)

        return self._engine.write(write)
