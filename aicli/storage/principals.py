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

import msgspec

from aicli import policy
from aicli.contract import (
    Page,
    Principal,
    PrincipalCreate,
    PrincipalLimits,
    Role,
    SessionPolicy,
    new_id,
    utcnow,
)
from aicli.contract.queries import PrincipalListQuery, given
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
    f" max_stored_bytes, {usage.OF_PRINCIPAL}, policy,"
    " EXISTS (SELECT 1 FROM principal_credentials WHERE principal_id = principals.id)"
)
_INSERT = (
    "INSERT INTO principals (id, name, role, token_hash, workspace_root, max_sessions,"
    " max_pending_per_session, budget_usd, created_at, max_stored_bytes, policy)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SET_LIMITS = (
    "UPDATE principals SET max_sessions = ?, max_pending_per_session = ?, budget_usd = ?,"
    " max_stored_bytes = ?, policy = ? WHERE id = ?"
)
_ROLE = "SELECT role FROM principals WHERE id = ?"
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


_policy_from_json = msgspec.json.Decoder(SessionPolicy).decode


def _policy_text(given: SessionPolicy | None) -> str | None:
    return None if given is None else msgspec.json.encode(given).decode()


def _stored_limits(role: Role, given: PrincipalLimits | None) -> PrincipalLimits:
    """Limits as stored: counts as ints (they arrive as whole floats, 5.0), and the policy
    whole, each field left out taken from the role's default when it is set."""
    given = given or PrincipalLimits()
    return PrincipalLimits(
        max_sessions=_count(given.max_sessions),
        max_pending_per_session=_count(given.max_pending_per_session),
        budget_usd=to_db_float(given.budget_usd),
        max_stored_bytes=_count(given.max_stored_bytes),
        policy=policy.of_role(role, given.policy),
    )


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def principal_from_row(row: Sequence[Any]) -> Principal:
    (
        principal_id, name, role, workspace_root, max_sessions, max_pending, budget_usd,
        created_at, revoked_at, total_cost_usd, max_stored_bytes, stored_bytes, policy_text,
        own_credentials,
    ) = row  # fmt: skip
    role = Role(role)
    given = None if policy_text is None else _policy_from_json(policy_text)
    return Principal(
        id=principal_id,
        name=name,
        role=role,
        workspace_root=workspace_root,
        limits=PrincipalLimits(
            max_sessions=max_sessions,
            max_pending_per_session=max_pending,
            budget_usd=budget_usd,
            max_stored_bytes=max_stored_bytes,
            policy=policy.of_role(role, given),
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
        limits = _stored_limits(request.role, request.limits)
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
            _policy_text(limits.policy),
        )
        self._engine.write(lambda: self._execute(_INSERT, params))
        return principal

    def set_limits(self, principal_id: str, given: PrincipalLimits) -> Principal:
        """Replace all of a principal's limits: what ``given`` leaves out is no limit, and
        the policy's default is its role's. Sessions opened before keep what they got."""

        def write() -> Principal:
            row = self._execute(_ROLE, (principal_id,)).fetchone()
            if row is None:
                raise PrincipalNotFound(principal_id)
            limits = _stored_limits(Role(row[0]), given)
            self._execute(
                _SET_LIMITS,
                (
                    limits.max_sessions,
                    limits.max_pending_per_session,
                    limits.budget_usd,
                    limits.max_stored_bytes,
                    _policy_text(limits.policy),
                    principal_id,
                ),
            )
            return principal_from_row(self._execute(_BY_ID, (principal_id,)).fetchone())

        return self._engine.write(write)

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

    def list(self, query: PrincipalListQuery | None = None, /, **fields: Any) -> Page:
        """A page of principals (``query``, or its fields as keywords)."""
        query = given(PrincipalListQuery, query, fields)
        request = paging.page_request(query.limit, query.cursor, query.order)
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
