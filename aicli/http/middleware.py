"""Cross-cutting request checks that every route shares, in the order they run.

1. ``RequestLog``: one log line and the HTTP metrics per request.
2. ``BearerAuth``: the API token, before anything else can be learnt.
3. ``BodyLimits``: a declared body too large (413), or not JSON (415).
4. ``ShutdownGate``: no new work while the runtime shuts down (503).
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

import falcon

from aicli.errors import Unavailable
from aicli.http.media import is_json_type, too_large
from aicli.http.metrics import HttpMetrics

log = logging.getLogger("aicli.http.access")

PUBLIC_PATHS = frozenset({"/healthz"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MUTATING_METHODS = BODY_METHODS | {"DELETE"}


class RequestLog:
    def __init__(self, metrics: HttpMetrics) -> None:
        self._metrics = metrics

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.monotonic()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        elapsed = time.monotonic() - req.context.get("started", time.monotonic())
        route = req.uri_template or "unmatched"
        self._metrics.observe(req.method, route, resp.status_code, elapsed)
        log.info("%s %s %s %.1fms", req.method, req.relative_uri, resp.status_code, elapsed * 1e3)


class BearerAuth:
    """Constant-time check of ``Authorization: Bearer <token>`` when a token is set."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self._token is None or req.path in PUBLIC_PATHS:
            return
        header = req.get_header("Authorization") or ""
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise falcon.HTTPUnauthorized(
                description="This route needs an 'Authorization: Bearer <token>' header.",
                challenges=["Bearer"],
            )
        if not hmac.compare_digest(given.strip().encode(), self._token):
            raise falcon.HTTPUnauthorized(
                description="The bearer token is not valid.", challenges=["Bearer"]
            )


class BodyLimits:
    """Rejects early a body no route would take; ``media.read_json_object`` caps the real read.

    Only methods that carry a body are checked: a body sent with GET or DELETE
    is ignored, as HTTP gives it no meaning.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if (
            req.method in BODY_METHODS
            and req.content_length is not None
            and req.content_length > self._max_bytes
        ):
            raise too_large(self._max_bytes)

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        if (
            resource is not None
            and req.method in BODY_METHODS
            and req.content_length
            and not is_json_type(req.content_type)
        ):
            raise falcon.HTTPUnsupportedMediaType(
                description=f"Content-Type must be application/json, not {req.content_type!r}."
            )


class ShutdownGate:
    def __init__(self, runtime: Any) -> None:
        self._runtime = runtime

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        if resource is not None and req.method in MUTATING_METHODS and not self._runtime.accepting:
            raise Unavailable("The server is shutting down and accepts no new work.")
