"""The service half of the façade: principals and their credentials, nodes, readiness, drain.

Each method hands its call to its noun's controller; the signatures and the
documentation of the embedding API live here, the doing in the controllers.
"""

from __future__ import annotations

from typing import Any

from aicli.contract import (
    Credentials,
    CredentialsSet,
    Node,
    Page,
    Principal,
    PrincipalCreate,
    PrincipalListQuery,
    PrincipalUpdate,
)
from aicli.contract.queries import given
from aicli.runtime.node import NodeLife
from aicli.runtime.principals import Principals
from aicli.runtime.processes import Reaper


class ServiceApi:
    _principals: Principals
    _node: NodeLife
    _reaper: Reaper

    # Nodes

    def nodes(self, *, principal: Principal | None = None) -> list[Node]:
        """The servers sharing this database whose lease lasts (admins only)."""
        return self._node.nodes(principal)

    # Principals

    def principal_for(self, token: str | None) -> Principal | None:
        """The caller a bearer token names: ``None`` for the open service, else ``Unauthorized``.

        The configured token is compared in constant time; any other token is
        hashed and looked up, a wrong one as much as a right one, so the time a
        refusal takes says nothing about how near a guess came.
        """
        return self._principals.principal_for(token)

    def me(self, principal: Principal | None) -> Principal:
        """The caller; in the open service, the built-in admin ``root``."""
        return self._principals.me(principal)

    def create_principal(
        self, request: PrincipalCreate, *, principal: Principal | None = None
    ) -> Principal:
        """A new principal and its token, shown only in this answer (admins only)."""
        return self._principals.create(request, principal)

    def list_principals(
        self,
        query: PrincipalListQuery | None = None,
        /,
        *,
        principal: Principal | None = None,
        **filters: Any,
    ) -> Page:
        """A page of principals (admins only): ``query``, or its fields as keywords."""
        return self._principals.page(given(PrincipalListQuery, query, filters), principal)

    def get_principal(self, principal_id: str, *, principal: Principal | None = None) -> Principal:
        """A principal, for admins and for itself; to anyone else it does not exist."""
        return self._principals.get(principal_id, principal)

    def update_principal(
        self, principal_id: str, request: PrincipalUpdate, *, principal: Principal | None = None
    ) -> Principal:
        """Replace a principal's limits, its policy among them (admins only). A policy
        applies to the sessions opened afterwards; those open keep what they were opened
        with. The built-in root has no row and no limits to change."""
        return self._principals.update(principal_id, request, principal)

    def revoke_principal(
        self, principal_id: str, *, principal: Principal | None = None
    ) -> Principal:
        """Revoke (admins only): its token stops working at the next request, and its work
        stops on every node. Its sessions close with its revocation, in one commit (pending
        tasks cancelled, so none of them runs), its running tasks are interrupted (their
        pending approvals expire) and its open streams and long-polls end (``Revocations``).
        Returns once its running tasks have ended, as ``close_session`` does.
        """
        return self._principals.revoke(principal_id, principal)

    # Principals' own credentials

    def set_credentials(
        self, principal_id: str, request: CredentialsSet, *, principal: Principal | None = None
    ) -> Credentials:
        """Store the principal's own Anthropic key or token, sealed; its sessions' Claude then
        reaches the API with it instead of the operator's. The answer never holds the secret."""
        return self._principals.set_credentials(principal_id, request, principal)

    def get_credentials(
        self, principal_id: str, *, principal: Principal | None = None
    ) -> Credentials:
        """Which kind of credential the principal brought, and when; ``NotFound`` if none."""
        return self._principals.get_credentials(principal_id, principal)

    def delete_credentials(self, principal_id: str, *, principal: Principal | None = None) -> None:
        """Forget the principal's own credential: its sessions use the operator's again."""
        self._principals.delete_credentials(principal_id, principal)

    def own_credentials(self, principal_id: str | None) -> dict[str, str] | None:
        """The headers that carry the credential a session's owner brought to the Messages
        API (``x-api-key``, or ``authorization``), for the credential-injecting proxy; None:
        the operator's credentials apply. ``CredentialsUnavailable`` if this node's secret
        key does not open them (its message says so, and holds no secret)."""
        return self._principals.own_credentials(principal_id)

    # Service

    def readiness(self) -> dict[str, str]:
        return self._node.readiness()

    def reap_leftovers(self) -> int:
        """End processes that dead runs on this database left behind (after a crash); a live
        node's, a reused pid and a process younger than the look are spared (``Reaper.reap``).
        """
        return self._reaper.reap()

    def shutdown(self, grace: float | None = None) -> None:
        """Stop taking work, let running tasks finish for ``grace`` s, then interrupt them.

        Sessions start no new task meanwhile: pending tasks stay pending for the next start.
        """
        self._node.shutdown(grace)
