"""The one place where failures become HTTP statuses and the one error body.

Domain exceptions (``aicli.errors``), Falcon's own HTTP errors (unknown route,
wrong method, ...) and anything unexpected all leave through here, so every
error a client sees has the same shape and no traceback ever leaves the process.

Only a server fault (500) logs its traceback. A 4xx is the client's business
and logs nothing here (the access line has its status); a database outage
(503) logs one line without a traceback, as the cause is outside the process.
"""

from __future__ import annotations

import logging
from typing import Any

import falcon

from aicli import errors
from aicli.contract import STATUS_CODES, ErrorBody, ErrorDetail
from aicli.http import media

log = logging.getLogger(__name__)


# Most specific class first: the first match wins.
_DOMAIN_STATUS: tuple[tuple[type[errors.AicliError], str], ...] = (
    (errors.InvalidRequest, falcon.HTTP_400),
    (errors.Unauthorized, falcon.HTTP_401),
    (errors.BudgetExceeded, falcon.HTTP_402),
    (errors.Forbidden, falcon.HTTP_403),
    (errors.NotFound, falcon.HTTP_404),
    (errors.MisdirectedRequest, falcon.HTTP_421),
    (errors.Conflict, falcon.HTTP_409),
    (errors.IdempotencyKeyReused, falcon.HTTP_422),
    (errors.StorageLimitExceeded, falcon.HTTP_413),
    (errors.LimitExceeded, falcon.HTTP_429),
    (errors.Unavailable, falcon.HTTP_503),
)


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> ErrorBody:
    return ErrorBody(error=ErrorDetail(code=code, message=message, details=details or {}))


def _write(resp: falcon.Response, status: str, body: ErrorBody) -> None:
    resp.status = status
    media.write(resp, body)


def _retry_after(resp: falcon.Response, seconds: int | float | None) -> None:
    if seconds is not None:
        resp.set_header("Retry-After", str(max(1, round(seconds))))


def handle_domain_error(
    req: falcon.Request, resp: falcon.Response, ex: errors.AicliError, params: dict[str, Any]
) -> None:
    for kind, status in _DOMAIN_STATUS:
        if isinstance(ex, kind):
            if isinstance(ex, errors.StorageError):
                log.warning("%s %s: %s", req.method, req.path, ex.message)
            _write(resp, status, error_body(ex.code, ex.message, ex.details))
            _retry_after(resp, getattr(ex, "retry_after", None))
            if isinstance(ex, errors.Unauthorized):
                resp.set_header("WWW-Authenticate", "Bearer")
            return
    # StorageError, IllegalTransition: our fault, not the client's.
    handle_unexpected(req, resp, ex, params)


def handle_http_error(
    req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict[str, Any]
) -> None:
    code = STATUS_CODES.get(ex.status_code, "internal_error" if ex.status_code >= 500 else "error")
    message = ex.description or f"{ex.title}."
    if isinstance(ex, falcon.HTTPNotFound) and not ex.description:
        message = f"No route matches {req.method} {req.path}."
    elif isinstance(ex, falcon.HTTPMethodNotAllowed):
        allowed = (ex.headers or {}).get("Allow", "")
        message = f"Method {req.method} is not allowed on {req.path}; allowed: {allowed}."
    _write(resp, ex.status, error_body(code, message))
    for name, value in (ex.headers or {}).items():
        resp.set_header(name, value)


def handle_unexpected(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]
) -> None:
    log.error("Unhandled error on %s %s", req.method, req.path, exc_info=ex)
    _write(
        resp,
        falcon.HTTP_500,
        error_body("internal_error", "The server failed to handle the request; see its log."),
    )


def install(app: falcon.App) -> None:
    """Register the handlers; Falcon picks the most specific class for each error."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(errors.AicliError, handle_domain_error)
