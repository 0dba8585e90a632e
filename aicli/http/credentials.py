"""A principal's own Anthropic credentials (1.2): set, shown (never the secret), forgotten.

``/me/credentials`` is the caller's; ``/principals/{id}/credentials`` any principal's for
an admin, and a user's own (another id is 404 to a user, as everywhere). Who may is the
runtime's rule (``aicli.access.check_credentials``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon

from aicli import access
from aicli.contract import ROOT_PRINCIPAL_ID, CredentialsSet
from aicli.http import media
from aicli.http.middleware import caller
from aicli.http.query import params

if TYPE_CHECKING:
    from aicli.runtime import Runtime


class CredentialsResource:
    """Serves both paths: without ``principal_id``, the caller's (``root`` in an open
    service, where the runtime refuses it)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def _target(self, req: falcon.Request, principal_id: str | None) -> str:
        if principal_id is not None:
            return principal_id
        who = caller(req)
        return ROOT_PRINCIPAL_ID if who is None else who.id

    def on_put(
        self, req: falcon.Request, resp: falcon.Response, principal_id: str | None = None
    ) -> None:
        params(req)
        target = self._target(req, principal_id)
        # Refused before the body is read: whatever it holds, it is not for this caller.
        access.check_credentials(caller(req), target)
        request = media.read(req, CredentialsSet, self._runtime.settings.max_body_bytes)
        stored = self._runtime.set_credentials(target, request, principal=caller(req))
        media.write(resp, stored)

    def on_get(
        self, req: falcon.Request, resp: falcon.Response, principal_id: str | None = None
    ) -> None:
        params(req)
        found = self._runtime.get_credentials(
            self._target(req, principal_id), principal=caller(req)
        )
        media.write(resp, found)

    def on_delete(
        self, req: falcon.Request, resp: falcon.Response, principal_id: str | None = None
    ) -> None:
        params(req)
        self._runtime.delete_credentials(self._target(req, principal_id), principal=caller(req))
        resp.status = falcon.HTTP_204
