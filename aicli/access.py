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

from datetime import UTC, datetime

from aicli.contract import ROOT_PRINCIPAL_ID, Principal, PrincipalLimits, Role
from aicli.errors import ApprovalNotFound, Forbidden, SessionNotFound, TaskNotFound
from aicli.storage import Store

# The built-in admin whose token is ``AICLI_API_TOKEN``; it has no row.
ROOT = Principal(
    id=ROOT_PRINCIPAL_ID,
    name=ROOT_PRINCIPAL_ID,
    role=Role.ADMIN,
    workspace_root=None,
    limits=PrincipalLimits(),
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


def list_owner(caller: Principal | None, owner: str | None) -> str | None:
    """The owner a list is narrowed to: a user's own, or what an admin asked for."""
    if sees_all(caller):
        return owner
    if owner is not None and owner != caller.id:
        raise Forbidden("Only an admin may list another principal's work.", {"field": "owner"})
    return caller.id
