"""The anchor of the read path: a bare Falcon app on plain Waitress serving the same JSON.

It is what anyone would write to serve those bytes: Falcon's routing, the body
aicli answered with, encoded once, and ``waitress.serve`` with as many threads
as the aicli server beside it; nothing else. The gap between it and aicli is
everything aicli does per request: middleware, the database read, building and
encoding its objects.

    python -m benchmarks.bare_falcon PORT THREADS PAYLOADS.json [--media] [--aicli-wrapper]

PAYLOADS maps each request target (path and query, as the benchmark asks it)
to the status and body aicli answered it with. Two variants show where the
anchor's own choices matter (the read benchmark's ``bare_media`` and
``bare_wrapped`` sides): ``--media`` encodes the body on every request
(``resp.media``), as the anchor did before it was made to match the held-out
measurement; ``--aicli-wrapper`` serves in aicli's own Waitress wrapper
(``aicli.http.server.Server``) instead of plain Waitress.
"""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import urlsplit

import falcon
import waitress


class _Canned:
    """One route; the body is picked by query string, as aicli's answer depends on it."""

    def __init__(self, media: bool) -> None:
        self.media = media
        self.answers: dict[str, tuple[str, Any]] = {}

    def add(self, query: str, status: int, body: Any) -> None:
        self.answers[query] = (falcon.code_to_http_status(status), body)

    def on_get(self, req: falcon.Request, resp: falcon.Response, **_: str) -> None:
        status, body = self.answers[req.query_string]
        resp.status = status
        if self.media:
            resp.media = body
        else:
            resp.content_type = falcon.MEDIA_JSON
            resp.data = body


def app(payloads: dict[str, dict[str, Any]], media: bool = False) -> falcon.App:
    """A route per path template the payloads use, each answering the bodies aicli gave."""
    application = falcon.App()
    routes: dict[str, _Canned] = {}
    for target, answer in payloads.items():
        split = urlsplit(target)
        parts = split.path.strip("/").split("/")
        template = "/tasks/{task_id}" if parts[0] == "tasks" and len(parts) == 2 else split.path
        if template not in routes:
            routes[template] = _Canned(media)
            application.add_route(template, routes[template])
        body = answer["body"] if media else json.dumps(answer["body"]).encode()
        routes[template].add(split.query, answer["status"], body)
    return application


def main() -> None:
    port, threads, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    flags = sys.argv[4:]
    with open(path) as file:
        application = app(json.load(file), media="--media" in flags)
    if "--aicli-wrapper" in flags:
        from aicli.http.server import Server

        Server(application, host="127.0.0.1", port=port, threads=threads).run()
        return
    waitress.serve(application, host="127.0.0.1", port=port, threads=threads, _quiet=True)


if __name__ == "__main__":
    main()
