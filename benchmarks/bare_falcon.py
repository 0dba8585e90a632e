"""The ceiling of aicli's HTTP stack: Falcon answering canned task JSON, nothing else.

It runs in aicli's own Waitress wrapper (same threads, same channel settings),
so the gap between it and aicli is what aicli does per request: routing,
middleware, the database read, serialising its objects.

    python -m benchmarks.bare_falcon PORT THREADS PAYLOADS.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

import falcon

from aicli.http.server import Server


class _Canned:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def on_get(self, req: falcon.Request, resp: falcon.Response, **_: str) -> None:
        resp.media = self.body


def app(payloads: dict[str, Any]) -> falcon.App:
    """``/tasks/{id}`` and ``/tasks`` answer the bodies aicli gave for the same requests."""
    application = falcon.App()
    application.add_route("/tasks/{task_id}", _Canned(payloads["task"]))
    application.add_route("/tasks", _Canned(payloads["list"]))
    return application


def main() -> None:
    port, threads, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    with open(path) as file:
        payloads = json.load(file)
    Server(app(payloads), host="127.0.0.1", port=port, threads=threads).run()


if __name__ == "__main__":
    main()
