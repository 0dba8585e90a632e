"""Who may see and do what: the one place principals are applied.

Every runtime call that names a session or a task, or lists them, asks here
first, so HTTP and embedders get the same rules. The caller ``None`` is the
open service (no token configured and no principal created) or an embedder
that passes none: it sees everything, as in version 1. An admin sees
everything and may filter lists by owner. A user sees only the sessions it
opened, with their tasks and events; anyone else's id is answered exactly like
an unknown one, with the same error after the same single query, so that
existence does not leak.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TypeVar

import msgspec

from aicli import policy
from aicli.contract import ROOT_PRINCIPAL_ID, Principal, PrincipalLimits, Role
from aicli.errors import (
    ApprovalNotFound,
    Forbidden,
    PrincipalNotFound,
    SessionNotFound,
    TaskNotFound,
    Unauthorized,
)
from aicli.storage import Store

Q = TypeVar("Q", bound=msgspec.Struct)

# The built-in admin whose token is ``AICLI_API_TOKEN``; it has no row.
ROOT = Principal(
    id=ROOT_PRINCIPAL_ID,
    name=ROOT_PRINCIPAL_ID,
    role=Role.ADMIN,
    workspace_root=None,
    limits=PrincipalLimits(policy=policy.ADMIN_DEFAULT),
    created_at=datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
)


def sees_all(caller: Principal | None) -> bool:
    return caller is None or caller.role == Role.ADMIN


def owner_of_new(caller: Principal | None) -> str | None:
    """The owner a session opened by ``caller`` gets (none in the open service)."""
    return None if caller is None else caller.id


def require_admin(caller: Principal | None, what: str) -> None:
    if not sees_all(caller):
        raise Forbidden(f"Only an admin may {what}.", {"role": str(caller.role)})


def check_credentials(caller: Principal | None, principal_id: str) -> None:
    """Whether ``caller`` may set, see or forget the own credentials of ``principal_id``: a
    principal its own, an admin anyone's. An open service has no principal to hold them
    (``Forbidden``), nor has ``root``, the operator, whose are the service's own."""
    if caller is None:
        raise Forbidden(
            "This service is open (no API token, no principal yet), so no caller has "
            "credentials of its own: they belong to principals, which the operator creates "
            "with `aicli principals create NAME`.",
            {"service": "open"},
        )
    if not sees_all(caller) and principal_id != caller.id:
        raise PrincipalNotFound(principal_id)
    if principal_id == ROOT.id:
        raise Forbidden(
            "The built-in admin 'root' (the configured API token) is the operator and uses "
            "the service's own credentials; bring credentials as a principal of your own.",
            {"principal_id": ROOT.id},
        )


def check_session(store: Store, caller: Principal | None, session_id: str) -> None:
    """``SessionNotFound`` unless ``caller`` may see the session."""
    if sees_all(caller):
        return
    if store.session_owner(session_id) != caller.id:
        raise SessionNotFound(session_id)


def check_task(store: Store, caller: Principal | None, task_id: str) -> None:
    """``TaskNotFound`` unless ``caller`` may see the task (through its session)."""
    if sees_all(caller):
        return
    _, owner = store.task_owner(task_id)
    if owner != caller.id:
        raise TaskNotFound(task_id)


def check_filter_session(store: Store, caller: Principal | None, session_id: str) -> None:
    """A list narrowed to a session: ``SessionNotFound`` unless the session exists and
    ``caller`` may see it. An empty page must still tell an unknown id, for admins too."""
    if sees_all(caller):
        store.session_owner(session_id)
    else:
        check_session(store, caller, session_id)


def check_filter_task(store: Store, caller: Principal | None, task_id: str) -> None:
    """``check_filter_session`` for a list narrowed to a task."""
    if sees_all(caller):
        store.task_owner(task_id)
    else:
        check_task(store, caller, task_id)


def check_approval(store: Store, caller: Principal | None, approval_id: str) -> None:
    """``ApprovalNotFound`` unless ``caller`` may see (and so decide) the approval."""
    if sees_all(caller):
        return
    _, owner = store.approvals.owner(approval_id)
    if owner != caller.id:
        raise ApprovalNotFound(approval_id)


def decider(caller: Principal | None) -> str:
    """Who an approval's ``decided_by`` names: the caller, or root in the open service."""
    return ROOT_PRINCIPAL_ID if caller is None else caller.id


def narrowed(caller: Principal | None, query: Q) -> Q:
    """A list's query (one with an ``owner`` field) narrowed to what ``caller`` may see: a
    user's own work, or what an admin asked for."""
    owner = query.owner  # type: ignore[attr-defined]
    if sees_all(caller):
        return query
    if owner is not None and owner != caller.id:
        raise Forbidden("Only an admin may list another principal's work.", {"field": "owner"})
    return msgspec.structs.replace(query, owner=caller.id)


class Revocations:
    """The revoked principals this node knows of, so that their open waits end.

    A stream or a long-poll was let in as a principal and may then wait for
    minutes; each of its wake-ups asks here (a set, no query) whether that
    principal was revoked since. Learning of a revocation wakes every waiter of
    the node (``nudge``), so an open wait ends at once: on the node that revoked,
    on its peers by their signal, and at every node's lease renewal, which reads
    the revoked ids again (for a lost signal, and for ``aicli principals
    revoke``, which writes only the row).
    """

    def __init__(self, nudge: Callable[[], None]) -> None:
        self._ids: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._nudge = nudge

    def check(self, caller: Principal | None) -> None:
        """``Unauthorized`` if ``caller`` was revoked since its request was let in."""
        if caller is not None and caller.id in self._ids:
            raise Unauthorized(f"Principal '{caller.name}' was revoked.")

    def add(self, principal_ids: Iterable[str]) -> None:
        """Learn of revocations; if any is news, every waiter looks again."""
        with self._lock:
            news = frozenset(principal_ids) - self._ids
            self._ids |= news
        if news:
            self._nudge()
