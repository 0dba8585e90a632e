"""Cross-cutting request checks that every route shares, in the order they run.

1. ``RequestLog``: a request id, one log line and the HTTP metrics per request.
2. ``HostCheck``: a ``Host`` that names another server (421), for every path.
3. ``DeclaredMethods``: a method the route does not have (405).
4. ``CrossSite``: a change asked for by a page of another origin (403).
5. ``BearerAuth``: the API token, before anything about the service can be learnt.
6. ``BodyLimits``: a declared body too large (413), or not typed JSON (415).
7. ``ShutdownGate``: no new work while the runtime shuts down (503).
8. ``ImpossibleIds``: an id no store can hold is unknown (404) without asking the store.

Steps 2 to 4 look at the request line and headers only, and what they tell (this
server's names, a route's methods, which are in the OpenAPI document) is no secret:
they refuse what a browser sent on a page's behalf, or no client of ours sent, before
a token is looked up. Nothing reads a byte of a body before step 6 has passed it.

Falcon runs them as one middleware object (``Middleware``), a method per phase that
calls the steps in order: each step that Falcon called itself cost a dispatch of its
own, and what a step can work out once (a route's methods, whether a ``Host`` value
names us) is worked out once, not on every request.
"""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any
from urllib.parse import urlsplit

import falcon

from aicli.errors import (
    ApprovalNotFound,
    Forbidden,
    MisdirectedRequest,
    PrincipalNotFound,
    SessionNotFound,
    TaskNotFound,
    Unavailable,
)
from aicli.http import hosts
from aicli.http.media import is_json_type, too_large
from aicli.http.metrics import HttpMetrics
from aicli.settings import Settings
from aicli.validation import unstorable

log = logging.getLogger("aicli.http.access")

PUBLIC_PATHS = frozenset({"/healthz"})
# The web dashboard's static files (``dashboard``): code, no data, so no token. The page
# then calls the API routes, which check the token it sends as any client's.
DASHBOARD_PREFIX = "/ui"
# Only reading them: any other method on a /ui path is checked like the API (401, or 405).
DASHBOARD_METHODS = frozenset({"GET", "HEAD"})
LOGGED_PARAMS = frozenset({"session_id", "task_id", "approval_id"})
# A client's own request id is kept if it is short and plain; otherwise we make one.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MUTATING_METHODS = BODY_METHODS | {"DELETE"}
# What a page of another origin may ask for: reading, whose answer the browser hides from it.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Sec-Fetch-Site values of a request a page of another origin made.
OTHER_SITES = frozenset({"cross-site", "same-site"})
# How many distinct ``Host`` values ``HostCheck`` remembers its answer for: the few names
# clients use, never a map that a stranger sending new names each time could grow.
HOSTS_REMEMBERED = 64
NOT_FOUND = {
    "session_id": SessionNotFound,
    "task_id": TaskNotFound,
    "principal_id": PrincipalNotFound,
    "approval_id": ApprovalNotFound,
}


class Middleware:
    """The steps above as Falcon's one middleware: requests, routed requests, responses."""

    def __init__(self, runtime: Any, metrics: HttpMetrics, router: Any) -> None:
        settings = runtime.settings
        self._runtime = runtime
        self._log = RequestLog(metrics, router)
        self._host = HostCheck(settings)
        self._methods = DeclaredMethods(router)
        self._cross_site = CrossSite(settings)
        self._auth = BearerAuth(runtime)
        self._limits = BodyLimits(settings.max_body_bytes)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._log.start(req, resp)
        self._host.check(req)
        self._methods.check(req)
        self._cross_site.check(req)
        self._auth.check(req)
        self._limits.check(req)

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        req.context.params = params
        # The shutdown gate: no new work while the runtime shuts down.
        if resource is not None and req.method in MUTATING_METHODS and not self._runtime.accepting:
            raise Unavailable("The server is shutting down and accepts no new work.")
        refuse_impossible_ids(params)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        self._log.finish(req, resp)


class RequestLog:
    """One access line and the HTTP metrics per request, labelled by route template.

    A request refused before routing (401, 413) is still matched against the
    router here, so its line and metrics name the route and ids it aimed at.
    The query string is left out: filters are noise, and ids are in the path.
    A request id we make need not be secret, only unique: drawn from a generator
    seeded once from the system's randomness rather than a system call per request.
    """

    def __init__(self, metrics: HttpMetrics, router: Any) -> None:
        self._metrics = metrics
        self._router = router
        self._ids = random.Random()

    def start(self, req: falcon.Request, resp: falcon.Response) -> None:
        context = req.context
        context.started = time.monotonic()
        given = req.get_header("X-Request-ID")
        if not (given and REQUEST_ID.fullmatch(given)):
            given = f"{self._ids.getrandbits(128):032x}"
        context.request_id = given
        resp.set_header("X-Request-ID", given)

    def finish(self, req: falcon.Request, resp: falcon.Response) -> None:
        context = req.context
        started = context.get("started")
        elapsed = 0.0 if started is None else time.monotonic() - started
        route, params = req.uri_template, context.get("params")
        if route is None:
            found = self._router.find(req.path)
            route, params = (found[3], found[2]) if found else ("unmatched", None)
        principal = context.get("principal")
        role = "none" if principal is None else str(principal.role)
        status = resp.status_code
        self._metrics.observe(req.method, route, status, elapsed, role)
        ids = {key: value for key, value in (params or {}).items() if key in LOGGED_PARAMS}
        if principal is not None:
            ids["principal"] = principal.id
        log.info(
            "request",
            extra={
                "method": req.method,
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1e3, 1),
                "request_id": context.get("request_id"),
                "client": req.remote_addr,
                **ids,
            },
        )


class HostCheck:
    """421 for a ``Host`` that names another server (``hosts``), before anything else."""

    def __init__(self, settings: Settings) -> None:
        self._allowed = hosts.allowed_hosts(settings)
        self._answers: dict[str | None, bool] = {}

    def check(self, req: falcon.Request) -> None:
        given = req.get_header("Host")
        ours = self._answers.get(given)
        if ours is None:
            ours = hosts.names_this_server(given, self._allowed)
            if len(self._answers) < HOSTS_REMEMBERED:
                self._answers[given] = ours
        if ours:
            return
        refused = (
            "This request has no Host header, so it does not name this server"
            if given is None
            else f"This server does not answer to the host {given!r}"
        )
        raise MisdirectedRequest(
            f"{refused}: a request must name it "
            "by localhost, a loopback address, the address it listens on, the host of its "
            "node URL or a host in its allowed hosts (AICLI_ALLOWED_HOSTS).",
            {"host": given},
        )


class DeclaredMethods:
    """405 for a method the route has no responder for, before the token is checked:
    which methods a route has is in the OpenAPI document anyway. ``OPTIONS`` is Falcon's
    own answer (``Allow``) on every route. An unknown path goes on: without the token it
    is 401, as any other, so that which paths exist is not told to strangers."""

    def __init__(self, router: Any) -> None:
        self._router = router
        # A resource's methods, found once: its responders are all added with its route.
        self._allowed: dict[object, tuple[str, ...]] = {}

    def check(self, req: falcon.Request) -> None:
        if req.method == "OPTIONS":
            return
        found = self._router.find(req.path)
        if found is None:
            return
        resource = found[0]
        allowed = self._allowed.get(resource)
        if allowed is None:
            allowed = self._allowed[resource] = tuple(
                m for m in falcon.constants.COMBINED_METHODS if hasattr(resource, _on(m))
            )
        if req.method not in allowed:
            raise falcon.HTTPMethodNotAllowed([*allowed, "OPTIONS"])


def _on(method: str) -> str:
    return "on_" + method.lower().replace("-", "_")


class CrossSite:
    """403 for a request that would change something and that a page of another origin sent.

    Browsers name the page in ``Origin`` and say where it is in ``Sec-Fetch-Site``; a
    program sends neither. The dashboard's own requests are same-origin. An origin is
    ours when it is the host and port the request was sent to (``Host``) or those of
    the node URL (behind a proxy that rewrites ``Host``).
    """

    def __init__(self, settings: Settings) -> None:
        self._node_host = urlsplit(settings.node_url).netloc if settings.node_url else None

    def check(self, req: falcon.Request) -> None:
        if req.method in SAFE_METHODS:
            return
        site = (req.get_header("Sec-Fetch-Site") or "").lower()
        origin = req.get_header("Origin")
        if site in OTHER_SITES or (origin is not None and not self._ours(origin, req)):
            raise Forbidden(
                f"A web page of another origin ({origin or site}) may not change anything "
                "here; use the dashboard at /ui of this server, or a client that is not a "
                "browser.",
                {"origin": origin, "sec_fetch_site": site or None},
            )

    def _ours(self, origin: str, req: falcon.Request) -> bool:
        return hosts.same_origin(origin, req.get_header("Host")) or (
            self._node_host is not None and hosts.same_origin(origin, self._node_host)
        )


def is_dashboard(path: str) -> bool:
    """Whether ``path`` is one of the dashboard's static files (``/ui``, ``/ui/...``)."""
    return path == DASHBOARD_PREFIX or path.startswith(DASHBOARD_PREFIX + "/")


def caller(req: falcon.Request) -> Any:
    """Who is calling (a ``Principal``, set by ``BearerAuth``; None: the open service)."""
    return req.context.get("principal")


class BearerAuth:
    """Who is calling: ``req.context.principal`` from ``Authorization: Bearer <token>``.

    The runtime decides (``Runtime.principal_for``): the configured token is the
    built-in admin ``root``, a principal's token is that principal, and with no
    token configured and no principal created the service is open (``None``).
    Anything else is 401, before a route can tell whether an id exists. ``/healthz``
    and reading the dashboard's static files (``GET``/``HEAD`` of ``/ui``) need no
    token; any other method there is checked like the API, so the open service's
    principal (None) is never given to a request that could change something.
    """

    def __init__(self, runtime: Any) -> None:
        self._runtime = runtime

    def check(self, req: falcon.Request) -> None:
        if req.path in PUBLIC_PATHS or (req.method in DASHBOARD_METHODS and is_dashboard(req.path)):
            req.context.principal = None
            return
        header = req.get_header("Authorization") or ""
        scheme, _, given = header.partition(" ")
        token = given.strip() if scheme.lower() == "bearer" and given.strip() else None
        req.context.principal = self._runtime.principal_for(token)


class BodyLimits:
    """Rejects early a body no route would take; ``media.read_json_object`` caps the real read.

    A declared length over the limit is 413 for methods that carry a body; a body sent
    with any method that changes something (``DELETE`` too) must be typed JSON, else 415
    (``media.is_json_type``), as only such a type makes a browser ask this server before
    a page of another site may send it. A body sent with ``GET`` is ignored, as HTTP
    gives it no meaning.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes

    def check(self, req: falcon.Request) -> None:
        if req.method not in MUTATING_METHODS:
            return
        if (
            req.method in BODY_METHODS
            and req.content_length is not None
            and req.content_length > self._max_bytes
        ):
            raise too_large(self._max_bytes)
        chunked = "chunked" in (req.get_header("Transfer-Encoding") or "").lower()
        if (req.content_length or chunked) and not is_json_type(req.content_type):
            given = "none" if req.content_type is None else repr(req.content_type)
            raise falcon.HTTPUnsupportedMediaType(
                description=f"A request body must have Content-Type application/json; "
                f"this one has {given}."
            )


def refuse_impossible_ids(params: dict[str, Any]) -> None:
    """A path id with a NUL or an unpaired surrogate cannot exist; PostgreSQL would choke on it."""
    for name, value in params.items():
        if name in NOT_FOUND and unstorable(value) is not None:
            raise NOT_FOUND[name](value)
