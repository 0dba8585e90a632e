"""The real service for HTTP tests: a Runtime, Waitress on a free port, and a checking client.

Every response the client receives is checked against the OpenAPI document the
server itself serves: the status must be documented for that route and method,
and a JSON body must validate against the documented schema (Draft 2020-12).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import falcon
import falcon.testing
import jsonschema
import requests

from aicli import Runtime
from aicli.http import Server, create_app

DRAFT = "https://json-schema.org/draft/2020-12/schema"
# The root token of the servers ``http_fixtures.url`` starts.
ROOT_TOKEN = "root-token"


def local_test_client(app: falcon.App) -> falcon.testing.TestClient:
    """Falcon's test client, naming the server ``localhost`` as a local client would (its
    default host, ``falconframework.org``, is another server's name: 421)."""
    return falcon.testing.TestClient(app, headers={"Host": "localhost"})


@contextmanager
def serving(runtime: Runtime, **app_options: Any) -> Iterator[str]:
    """Serve ``runtime`` on 127.0.0.1 and a free port; yields the base URL."""
    server = Server(
        create_app(runtime, **app_options),
        host="127.0.0.1",
        port=0,
        threads=runtime.settings.threads,
        max_streams=runtime.settings.max_streams,
    )
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.request_stop()
        thread.join(timeout=5)
        server.close()


class OpenApi:
    """Finds the documented response for a request and validates bodies against it."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self._routes = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path)
            for path in document["paths"]
        ]

    def template(self, path: str) -> str | None:
        for pattern, template in self._routes:
            if pattern.match(path):
                return template
        return None

    def validate(self, schema: dict[str, Any], instance: Any) -> None:
        wrapped = {"$schema": DRAFT, **schema, "components": self.document["components"]}
        jsonschema.Draft202012Validator(
            wrapped, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        ).validate(instance)

    def schema(self, name: str) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{name}"}

    def check(self, response: requests.Response) -> None:
        request = response.request
        path = requests.utils.urlparse(request.url).path.rstrip("/") or "/"
        method = request.method.lower()
        template = self.template(path)
        status = response.status_code
        if template is None or method not in self.document["paths"][template]:
            assert status in (404, 405), f"{method} {path} undocumented, got {status}"
            self.validate(self.schema("Error"), response.json())
            if status == 405:
                assert response.headers["Allow"]
            return
        responses = self.document["paths"][template][method]["responses"]
        assert str(status) in responses, (
            f"{method.upper()} {template} answered {status}, not documented: {sorted(responses)}"
        )
        if "content" not in responses[str(status)]:  # 204: no body
            assert response.content == b"", response.content
            return
        content_type = response.headers.get("Content-Type", "")
        documented = responses[str(status)]["content"]
        if content_type.startswith("application/json"):
            assert content_type == "application/json; charset=utf-8"
            self.validate(documented["application/json"]["schema"], response.json())
        else:
            media_type = content_type.split(";")[0]
            assert media_type in documented, f"{content_type} not documented for {template}"
        for header, spec in responses[str(status)].get("headers", {}).items():
            if spec.get("required"):
                assert header in response.headers, f"{status} lacks {header}"
            if header in response.headers:
                value = response.headers[header]
                self.validate(spec["schema"], int(value) if value.isdigit() else value)


class Client:
    """``requests`` with a base URL; every response is checked against the OpenAPI document.

    Streamed event responses are checked by status and media type only, so
    checking never reads (and so never blocks on) a live stream.
    """

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        document = self.http.get(f"{base_url}/openapi.json", timeout=10).json()
        self.openapi = OpenApi(document)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 90)
        response = self.http.request(method, self.base_url + path, **kwargs)
        self.openapi.check(response)
        return response

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def open_session(self, workdir: str, **fields: Any) -> dict[str, Any]:
        response = self.post("/sessions", json={"workdir": workdir, **fields})
        assert response.status_code == 201, response.text
        return response.json()

    def submit(self, session_id: str, command: str, **fields: Any) -> dict[str, Any]:
        response = self.post(f"/sessions/{session_id}/tasks", json={"command": command, **fields})
        assert response.status_code == 202, response.text
        return response.json()

    def wait_terminal(self, task_id: str, timeout: float = 60) -> dict[str, Any]:
        response = self.get(f"/tasks/{task_id}", params={"wait": min(timeout, 60)})
        task = response.json()
        assert task["status"] in ("completed", "failed", "cancelled"), task
        return task

    def walk(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a list, page by page."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
            assert page.status_code == 200, page.text
            body = page.json()
            items.extend(body["data"])
            if not body["has_more"]:
                assert body["next_cursor"] is None
                return items
            cursor = body["next_cursor"]


def error_of(response: requests.Response, status: int, code: str) -> str:
    """The error message, after checking status, code and the one error shape."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["error"]["code"] == code, body
    message = body["error"]["message"]
    assert message.endswith(".") and "Traceback" not in message
    return message


def same_404(response: requests.Response, code: str, unknown: requests.Response) -> None:
    """Someone else's id is answered as an unknown one: status, code, words (but the id)."""
    error_of(response, 404, code)
    error_of(unknown, 404, code)
    body, other = response.json()["error"], unknown.json()["error"]
    assert body["message"].split("'")[0] == other["message"].split("'")[0]
    assert set(body["details"]) == set(other["details"])


class SseReader:
    """A minimal Server-Sent Events parser over a streamed ``requests`` response."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self.comments: list[str] = []
        self._lines = response.iter_lines(chunk_size=1, decode_unicode=True)

    def next_event(self) -> dict[str, Any] | None:
        """The next event, or None when the server ended the stream."""
        fields: dict[str, str] = {}
        for line in self._lines:
            if line == "":
                if fields:
                    return {
                        "id": int(fields["id"]),
                        "event": fields["event"],
                        "data": json.loads(fields["data"]),
                    }
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        return None

    def all_events(self) -> list[dict[str, Any]]:
        events = []
        while (event := self.next_event()) is not None:
            events.append(event)
        return events


def create_principal(admin: Client, name: str, **fields: Any) -> dict[str, Any]:
    """A new principal, created through the API by ``admin``, with its one-time token."""
    response = admin.post("/principals", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    principal = response.json()
    assert response.headers["Location"] == f"/principals/{principal['id']}"
    return principal
