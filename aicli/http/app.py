"""The WSGI application: routes, middleware and error handlers around one runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import falcon
from falcon.routing import CompiledRouter

from aicli.http import dashboard, errors, media
from aicli.http.approvals import ApprovalResource, ApprovalsResource
from aicli.http.bodies import Bodies
from aicli.http.credentials import CredentialsResource
from aicli.http.events import KEEPALIVE_S, EventsResource
from aicli.http.metrics import HttpMetrics
from aicli.http.middleware import Middleware
from aicli.http.nodes import NodesResource
from aicli.http.openapi import OpenApiResource
from aicli.http.principals import MeResource, PrincipalResource, PrincipalsResource
from aicli.http.service import HealthResource, MetricsResource, ReadyResource
from aicli.http.sessions import SessionResource, SessionsResource, SessionTasksResource
from aicli.http.slots import Slots
from aicli.http.tasks import TaskResource, TasksResource

if TYPE_CHECKING:
    from aicli.runtime import Runtime


class App(falcon.App):
    """Falcon's app with ``HEAD`` wherever ``GET``: the GET responder runs, and Falcon
    sends its headers without the body (a stream, ``EventsResource``, is not opened)."""

    def add_route(self, uri_template: str, resource: object, **kwargs: Any) -> None:
        if hasattr(resource, "on_get") and not hasattr(resource, "on_head"):
            resource.on_head = resource.on_get  # type: ignore[attr-defined]
        super().add_route(uri_template, resource, **kwargs)


def create_app(runtime: Runtime, *, keepalive_s: float = KEEPALIVE_S) -> falcon.App:
    """A new app serving ``runtime``; ``keepalive_s`` spaces SSE comment lines."""
    settings = runtime.settings
    router = CompiledRouter()
    app = App(
        media_type=media.JSON_TYPE,
        router=router,
        middleware=[
            Middleware(runtime, HttpMetrics.for_registry(runtime.metrics_registry), router)
        ],
    )
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)

    slots = Slots(settings.max_streams)
    bodies = Bodies()
    app.add_route("/sessions", SessionsResource(runtime))
    app.add_route("/sessions/{session_id}", SessionResource(runtime))
    app.add_route("/sessions/{session_id}/tasks", SessionTasksResource(runtime, slots, bodies))
    app.add_route("/tasks", TasksResource(runtime))
    app.add_route("/tasks/{task_id}", TaskResource(runtime, slots, bodies))
    app.add_route(
        "/tasks/{task_id}/events", EventsResource(runtime, slots, bodies, keepalive_s=keepalive_s)
    )
    app.add_route("/approvals", ApprovalsResource(runtime))
    app.add_route("/approvals/{approval_id}", ApprovalResource(runtime))
    app.add_route("/principals", PrincipalsResource(runtime))
    app.add_route("/principals/{principal_id}", PrincipalResource(runtime))
    app.add_route("/me", MeResource(runtime))
    credentials = CredentialsResource(runtime)
    app.add_route("/principals/{principal_id}/credentials", credentials)
    app.add_route("/me/credentials", credentials)
    app.add_route("/nodes", NodesResource(runtime))
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(runtime))
    app.add_route("/metrics", MetricsResource(runtime))
    app.add_route("/openapi.json", OpenApiResource(settings))
    # The web dashboard: static files, not API operations, so not in the OpenAPI document.
    dashboard.add_routes(app)
    return app
