"""Routes for operators and orchestrators rather than clients: health, readiness, metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aicli import access
from aicli.http import media
from aicli.http.middleware import caller

if TYPE_CHECKING:
    from aicli.runtime import Runtime

# Falcon's own JSON of ``{"status": "ok"}``, as it was sent before it was made once.
HEALTHY = b'{"status": "ok"}'


class HealthResource:
    """Liveness only: answers while the process serves, whatever the database does."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        media.write_encoded(resp, HEALTHY)


class ReadyResource:
    """Readiness: ``Runtime.readiness`` raises ``Unavailable`` (503) with the reason."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ready", **self._runtime.readiness()}


class MetricsResource:
    """Every tenant's activity in sum (tasks, costs, requests by route): for admins, and
    for the open service, where everyone is one."""

    def __init__(self, runtime: Runtime) -> None:
        self._registry = runtime.metrics_registry

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        access.require_admin(caller(req), "read the metrics")
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(self._registry)
