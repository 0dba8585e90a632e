"""The open service is no drive-by target: what a web page, or a name pointed at this
machine, could make the server do before, refused as an attacker would try it over HTTP.

- A body must be typed JSON (415): a page may send a typeless or ``text/plain`` body to
  any address without the browser asking first.
- ``Host`` must name this server (421): DNS rebinding makes the attacker's name point at
  127.0.0.1, and the page is then same-origin to itself.
- A change from a page of another origin (``Origin``, ``Sec-Fetch-Site``) is 403, with a
  body or without.
- An open service makes no principal over HTTP (``test_http_principals``); ``/metrics`` is
  for admins; ``HEAD`` wherever ``GET``; a method a route lacks is 405 before the token.

The browser itself, on a page of another origin, is in ``test_browser``.
"""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest
import requests

from aicli.cli import build_parser
from aicli.contract import PrincipalCreate
from aicli.errors import InvalidRequest
from aicli.http import create_app
from aicli.settings import Settings
from tests.http_server import Client, error_of, serving

pytest_plugins = ("tests.http_fixtures",)

TOKEN = "door-t0ken"
JSON = {"Content-Type": "application/json"}


def sessions(url: str) -> list[dict]:
    return Client(url).walk("/sessions")


def send(url: str, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(method, url + path, timeout=30, **kwargs)


# The media type


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded"],
)
def test_an_open_service_takes_no_body_that_is_not_typed_json(base_url, workdir, content_type):
    """What ``fetch(url, {method: "POST", mode: "no-cors", body: new Blob([json])})`` and a
    text/plain form send: before, the first opened a session with Bash allowed."""
    body = json.dumps({"workdir": workdir, "allowed_tools": ["Bash"]})
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = send(base_url, "POST", "/sessions", data=body, headers=headers)
    message = error_of(response, 415, "unsupported_media_type")
    assert "application/json" in message
    assert sessions(base_url) == []


def test_a_chunked_body_and_a_delete_body_must_be_typed_json_too(base_url, workdir):
    body = json.dumps({"workdir": workdir}).encode()
    chunked = send(base_url, "POST", "/sessions", data=iter([body]))
    assert chunked.request.headers["Transfer-Encoding"] == "chunked"
    error_of(chunked, 415, "unsupported_media_type")
    assert sessions(base_url) == []
    session = Client(base_url).open_session(workdir)
    closing = send(base_url, "DELETE", f"/sessions/{session['id']}", data="{}")
    error_of(closing, 415, "unsupported_media_type")
    assert Client(base_url).get(f"/sessions/{session['id']}").json()["status"] == "idle"
    # Typed JSON, with a charset, or none at all on a request without a body: as before.
    typed = {"Content-Type": "application/json; charset=utf-8"}
    assert send(base_url, "POST", "/sessions", data=body, headers=typed).status_code == 201
    assert send(base_url, "DELETE", f"/sessions/{session['id']}").status_code == 200


# The Host header

EVIL_HOSTS = [
    "attacker.example:8080",
    "attacker.example",
    "127.0.0.1.attacker.example",
    "localhost.attacker.example:80",
    "[::2]:8080",
    "0x7f000001.attacker.example",
    "localhost:8080,attacker.example",  # not one Host: refused, not read as its first
    "localhost@attacker.example",
]
GOOD_HOSTS = ["localhost", "LOCALHOST:1", "localhost.", "127.0.0.1", "127.8.9.10:443", "[::1]:99"]
EVERY_KIND = ["/healthz", "/ui", "/ui/app.js", "/openapi.json", "/me", "/sessions", "/metrics"]


@pytest.mark.parametrize("host", EVIL_HOSTS)
def test_a_host_that_names_another_server_is_421_on_every_path(base_url, workdir, host):
    """DNS rebinding: ``attacker.example`` now resolves to 127.0.0.1, and its page reads
    the answers as its own. It gets the error body, and no data, on every path."""
    for path in EVERY_KIND:
        response = send(base_url, "GET", path, headers={"Host": host})
        message = error_of(response, 421, "misdirected_request")
        assert "allowed hosts" in message, path
    opened = send(base_url, "POST", "/sessions", json={"workdir": workdir}, headers={"Host": host})
    error_of(opened, 421, "misdirected_request")
    assert sessions(base_url) == []


def test_every_name_of_this_server_is_served(base_url):
    for host in GOOD_HOSTS:
        response = send(base_url, "GET", "/sessions", headers={"Host": host})
        assert response.status_code == 200, (host, response.text)


def raw_request(url: str, request: bytes) -> bytes:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_a_request_without_a_host_is_421_unless_any_host_is_allowed(make_runtime, tmp_path):
    """HTTP/1.0 may leave ``Host`` out; such a request cannot show it means this server."""
    request = b"GET /sessions HTTP/1.0\r\n\r\n"
    with serving(make_runtime()) as url:
        answer = raw_request(url, request)
        assert answer.startswith(b"HTTP/1.0 421 ") or answer.startswith(b"HTTP/1.1 421 ")
        assert b'"misdirected_request"' in answer
        # Said as it is, not as "the host None".
        assert b"None" not in answer and b"has no Host header" in answer
    anywhere = make_runtime(allowed_hosts="*", database_url=f"sqlite:///{tmp_path}/any.db")
    with serving(anywhere) as url:
        assert b" 200 " in raw_request(url, request).split(b"\r\n", 1)[0]


def test_allowed_hosts_and_the_node_url_name_this_server(make_runtime):
    runtime = make_runtime(
        allowed_hosts="aicli.internal, Other.Example:9000,[fd00::1]",
        node_url="https://node-a.example",
    )
    with serving(runtime) as url:
        for host in ["aicli.internal", "aicli.internal:1", "other.example", "[fd00::1]:8080"]:
            assert send(url, "GET", "/me", headers={"Host": host}).status_code == 200, host
        assert send(url, "GET", "/me", headers={"Host": "node-a.example"}).status_code == 200
        error_of(
            send(url, "GET", "/me", headers={"Host": "aicli.evil"}), 421, "misdirected_request"
        )


@pytest.mark.parametrize(
    "entry", ["https://aicli.example", "*.example.com", "aicli.example/ui", "user@aicli.example"]
)
def test_an_allowed_host_that_no_host_header_can_match_is_refused(make_runtime, entry):
    """A URL or a wildcard in --allowed-hosts was silently kept and never matched: the
    server then answered 421 to the very name its operator meant to allow."""
    runtime = make_runtime(allowed_hosts=f"aicli.internal,{entry}")
    with pytest.raises(InvalidRequest) as refused:
        create_app(runtime)
    assert repr(entry) in refused.value.message and "allowed hosts" in refused.value.message
    assert refused.value.details == {"setting": "allowed_hosts"}


def test_any_host_is_served_when_allowed_hosts_is_a_star(make_runtime, monkeypatch):
    monkeypatch.setenv("AICLI_ALLOWED_HOSTS", "*")
    assert Settings.resolve({}).allowed_hosts == "*"
    with serving(make_runtime()) as url:
        for host in EVIL_HOSTS:
            assert send(url, "GET", "/me", headers={"Host": host}).status_code == 200, host


def test_the_bound_address_names_this_server(make_runtime):
    with serving(make_runtime(host="192.0.2.7")) as url:  # the app's check, not the bind
        assert send(url, "GET", "/me", headers={"Host": "192.0.2.7:8080"}).status_code == 200
        error_of(send(url, "GET", "/me", headers={"Host": "192.0.2.8"}), 421, "misdirected_request")


# A page of another origin


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://attacker.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},  # another port: another origin
        {"Origin": "http://localhost:PORT"},  # another host name: another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
    ids=["other-site", "null", "other-port", "other-name", "cross-site", "same-site"],
)
def test_a_change_from_a_page_of_another_origin_is_403(base_url, workdir, headers):
    port = str(urlsplit(base_url).port)
    headers = {name: value.replace("PORT", port) for name, value in headers.items()}
    session = Client(base_url).open_session(workdir)
    opened = send(base_url, "POST", "/sessions", json={"workdir": workdir}, headers=headers)
    message = error_of(opened, 403, "forbidden")
    assert "another origin" in message
    # No body, so a simple request too: nothing to type, and still refused.
    error_of(send(base_url, "POST", "/sessions", headers=headers), 403, "forbidden")
    closed = send(base_url, "DELETE", f"/sessions/{session['id']}", headers=headers)
    error_of(closed, 403, "forbidden")
    assert [s["status"] for s in sessions(base_url)] == ["idle"]
    # Reading is left to the browser, which hides the answer from the page.
    assert send(base_url, "GET", "/sessions", headers=headers).status_code == 200


def test_a_change_from_this_servers_own_pages_is_served(make_runtime, workdir):
    with serving(make_runtime(node_url="https://aicli.example")) as url:
        by_name = url.replace("127.0.0.1", "localhost")
        own = [
            {"Origin": url, "Sec-Fetch-Site": "same-origin"},
            {"Origin": by_name, "Host": urlsplit(by_name).netloc},
            {"Sec-Fetch-Site": "none"},
            {"Origin": "https://aicli.example"},  # the node URL, behind a proxy
        ]
        for headers in own:
            opened = send(url, "POST", "/sessions", json={"workdir": workdir}, headers=headers)
            assert opened.status_code == 201, (headers, opened.text)


# Principals, metrics, methods


def test_metrics_are_for_admins_only(make_runtime):
    runtime = make_runtime(api_token=TOKEN)
    user = runtime.create_principal(PrincipalCreate(name="alice"))
    with serving(runtime) as url:
        refused = Client(url, token=user.token).get("/metrics")
        assert "admin" in error_of(refused, 403, "forbidden")
        assert "aicli_http_requests" not in refused.text
        assert Client(url, token=TOKEN).get("/metrics").status_code == 200


def test_metrics_stay_open_on_an_open_service(base_url):
    assert Client(base_url).get("/metrics").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/sessions"), ("PATCH", "/sessions/x"), ("POST", "/tasks/x"), ("TRACE", "/me")],
)
def test_a_method_a_route_lacks_is_405_before_the_token(make_runtime, method, path):
    with serving(make_runtime(api_token=TOKEN)) as url:
        response = send(url, method, path)
        error_of(response, 405, "method_not_allowed")
        assert "GET" in response.headers["Allow"]
        # An unknown route still tells nothing without the token.
        error_of(send(url, method, "/nowhere"), 401, "unauthorized")


def test_head_answers_wherever_get_does_without_a_body(make_runtime, workdir):
    runtime = make_runtime(api_token=TOKEN)
    with serving(runtime) as url:
        admin = Client(url, token=TOKEN)
        session = admin.open_session(workdir)
        task = admin.submit(session["id"], "[[slow: 30]] take your time")
        ids = {
            "session_id": session["id"],
            "task_id": task["id"],
            "principal_id": "root",
            "approval_id": "unknown",
        }
        paths = [
            path.format(**ids)
            for path, item in admin.openapi.document["paths"].items()
            if "get" in item
        ]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for path in [*paths, "/ui", "/ui/app.js"]:
            got = send(url, "GET", path, headers=auth)
            head = send(url, "HEAD", path, headers=auth)
            assert head.status_code == got.status_code, (path, head.status_code, got.status_code)
            assert head.content == b"", path
            assert head.headers.get("Content-Type") == got.headers.get("Content-Type"), path
        # A live event stream: the headers, at once, and no stream held open.
        stream = {**auth, "Accept": "text/event-stream"}
        head = send(url, "HEAD", f"/tasks/{task['id']}/events", headers=stream)
        assert head.status_code == 200 and head.headers["Content-Type"] == "text/event-stream"
        assert head.content == b""
        # Without a token, HEAD is refused as GET is.
        error_of(send(url, "GET", "/sessions"), 401, "unauthorized")
        assert send(url, "HEAD", "/sessions").status_code == 401
        admin.delete(f"/tasks/{task['id']}")


def test_aicli_serve_takes_allowed_hosts():
    args = build_parser().parse_args(["serve", "--allowed-hosts", "aicli.internal,*"])
    assert args.allowed_hosts == "aicli.internal,*"
