"""Principals: who a bearer token names, their limits, their revocation, their credentials.

A revocation ends a principal's work on every node: its sessions close in the
revoking commit, its running tasks are interrupted, and its waits end
(``access.Revocations``, passed on to the peers). A principal's own Anthropic
credential is stored sealed and is only ever handed to the credential proxy.
"""

from __future__ import annotations

import hmac
import logging
import time

import msgspec

from aicli import access, validation
from aicli.contract import (
    Credentials,
    CredentialsSet,
    Page,
    Principal,
    PrincipalCreate,
    PrincipalListQuery,
    PrincipalUpdate,
)
from aicli.errors import Forbidden, NotFound, PrincipalNotFound, Unauthorized
from aicli.peers import Peers
from aicli.runtime.sessions import CLOSE_MARGIN_S, AfterClose
from aicli.runtime.tasks import Tasks
from aicli.settings import Settings
from aicli.storage import Store

log = logging.getLogger(__name__)

PRINCIPALS_CHECK_S = 1.0
REVOKED_PENDING = "Its principal was revoked before this task started."


class Principals:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        revocations: access.Revocations,
        peers: Peers,
        after_close: AfterClose,
        tasks: Tasks,
    ) -> None:
        self._store = store
        self._settings = settings
        self._revocations = revocations
        self._peers = peers
        self._after_close = after_close
        self._tasks = tasks
        self._seen = False
        self._checked = -PRINCIPALS_CHECK_S

    def principal_for(self, token: str | None) -> Principal | None:
        root = self._settings.api_token
        if root is not None and token and hmac.compare_digest(token.encode(), root.encode()):
            return access.ROOT
        found = self._store.principals.by_token(token) if token else None
        if found is not None:
            return found
        if root is None and not self._exist():
            return None
        if not token:
            raise Unauthorized("This route needs an 'Authorization: Bearer <token>' header.")
        raise Unauthorized("The bearer token is not valid.")

    def me(self, principal: Principal | None) -> Principal:
        if principal is None or principal.id == access.ROOT.id:
            return access.ROOT
        return self._store.principals.get(principal.id)

    def create(self, request: PrincipalCreate, principal: Principal | None) -> Principal:
        access.require_admin(principal, "create principals")
        if request.workspace_root is not None:
            request = msgspec.structs.replace(
                request,
                workspace_root=validation.principal_root(
                    request.workspace_root, self._settings.workspace_root
                ),
            )
        created = self._store.principals.create(request)
        self._seen = True
        log.info("principal created", extra={"principal_id": created.id, "role": created.role})
        return created

    def page(self, query: PrincipalListQuery, principal: Principal | None) -> Page:
        access.require_admin(principal, "list principals")
        return self._store.principals.list(query)

    def get(self, principal_id: str, principal: Principal | None) -> Principal:
        if principal_id == access.ROOT.id and access.sees_all(principal):
            return access.ROOT
        if not access.sees_all(principal) and principal_id != principal.id:
            raise PrincipalNotFound(principal_id)
        return self._store.principals.get(principal_id)

    def update(
        self, principal_id: str, request: PrincipalUpdate, principal: Principal | None
    ) -> Principal:
        access.require_admin(principal, "change principals")
        if principal_id == access.ROOT.id:
            raise Forbidden(
                "The built-in principal 'root' has no limits to change.", {"principal": "root"}
            )
        updated = self._store.principals.set_limits(principal_id, request.limits)
        log.info("principal limits changed", extra={"principal_id": principal_id})
        return updated

    def revoke(self, principal_id: str, principal: Principal | None) -> Principal:
        access.require_admin(principal, "revoke principals")
        revoked, closed = self._store.revoke_principal(principal_id, REVOKED_PENDING)
        self._revocations.add((principal_id,))
        self._peers.revoked(principal_id)
        log.info(
            "principal revoked",
            extra={"principal_id": principal_id, "sessions_closed": len(closed)},
        )
        deadline = time.monotonic() + self._settings.cancel_grace + CLOSE_MARGIN_S
        for running in self._after_close(closed):
            self._tasks.wait(running, timeout=max(0.0, deadline - time.monotonic()))
        return revoked

    def set_credentials(
        self, principal_id: str, request: CredentialsSet, principal: Principal | None
    ) -> Credentials:
        access.check_credentials(principal, principal_id)
        kind, secret = request.given()
        stored = self._store.credentials.put(principal_id, kind, secret)
        log.info(
            "credentials set",
            extra={"principal_id": principal_id, "kind": kind, "by": principal.id},
        )
        return stored

    def get_credentials(self, principal_id: str, principal: Principal | None) -> Credentials:
        access.check_credentials(principal, principal_id)
        found = self._store.credentials.get(principal_id)
        if found is None:
            self._store.principals.get(principal_id)  # an unknown id is that, not "none"
            raise NotFound(
                f"Principal '{principal_id}' has no credentials of its own.",
                {"principal_id": principal_id},
            )
        return found

    def delete_credentials(self, principal_id: str, principal: Principal | None) -> None:
        access.check_credentials(principal, principal_id)
        self._store.principals.get(principal_id)
        self._store.credentials.delete(principal_id)
        log.info("credentials deleted", extra={"principal_id": principal_id, "by": principal.id})

    def own_credentials(self, principal_id: str | None) -> dict[str, str] | None:
        return self._store.credentials.own_credentials(principal_id)

    def _exist(self) -> bool:
        """Whether the service is closed by principals: once one exists it stays so.

        Until then the answer is read at most once a second (principals created
        by ``aicli principals create`` in another process count within that).
        """
        if self._seen:
            return True
        now = time.monotonic()
        if now >= self._checked + PRINCIPALS_CHECK_S:
            self._checked = now
            self._seen = self._store.principals.count() > 0
        return self._seen
