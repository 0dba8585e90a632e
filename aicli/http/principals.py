"""Principals (1.1): who may call, created, listed, changed (1.2) and revoked by admins; and
``/me``.

The caller is ``req.context.principal``, put there by the bearer-token middleware
(``None``: the open service, where everything is allowed but creating a principal).
Who may do what is the runtime's rule (``aicli.access``): a user calling an admin
route gets 403, and another principal's id is 404 to it, as an unknown one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon

from aicli import access
from aicli.contract import PrincipalCreate, PrincipalListQuery, PrincipalUpdate
from aicli.errors import Forbidden
from aicli.http import media
from aicli.http.middleware import caller
from aicli.http.query import params

if TYPE_CHECKING:
    from aicli.runtime import Runtime

# Anyone who reaches an open service may call it; letting one caller make itself the first
# admin would shut everyone else out, for good. The first principal is made where the
# server runs.
OPEN_SERVICE = (
    "This service is open (no API token, no principal yet), so no caller may create the "
    "first principal over HTTP: create it with `aicli principals create NAME --admin` "
    "on the server's machine, or configure a root token (AICLI_API_TOKEN or "
    "--api-token-file)."
)


class PrincipalsResource:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        params(req)
        who = caller(req)
        if who is None:
            raise Forbidden(OPEN_SERVICE, {"service": "open"})
        # A user is refused before its body is read: whatever it sent, the route is not for it.
        access.require_admin(who, "create principals")
        request = media.read(req, PrincipalCreate, self._runtime.settings.max_body_bytes)
        created = self._runtime.create_principal(request, principal=who)
        resp.status = falcon.HTTP_201
        resp.location = f"/principals/{created.id}"
        media.write(resp, created)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        page = self._runtime.list_principals(params(req, PrincipalListQuery), principal=caller(req))
        media.write(resp, page)


class PrincipalResource:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def on_get(self, req: falcon.Request, resp: falcon.Response, principal_id: str) -> None:
        params(req)
        found = self._runtime.get_principal(principal_id, principal=caller(req))
        media.write(resp, found)

    def on_patch(self, req: falcon.Request, resp: falcon.Response, principal_id: str) -> None:
        params(req)
        who = caller(req)
        access.require_admin(who, "change principals")  # before the body, as on create
        request = media.read(req, PrincipalUpdate, self._runtime.settings.max_body_bytes)
        media.write(resp, self._runtime.update_principal(principal_id, request, principal=who))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, principal_id: str) -> None:
        params(req)
        who = caller(req)
        access.require_admin(who, "revoke principals")  # a user learns nothing of the id
        revoked = self._runtime.revoke_principal(principal_id, principal=who)
        media.write(resp, revoked)


class MeResource:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        params(req)
        media.write(resp, self._runtime.me(caller(req)))
