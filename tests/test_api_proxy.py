"""The credential-injecting API proxy: the real CLI through it, refusals, streaming, connections."""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from aicli.actors import api_proxy
from aicli.actors.api_proxy import ApiProxy, operator_upstream
from aicli.testing.fake_anthropic import FakeAnthropic
from aicli.testing.waiting import wait_for

OPERATOR_KEY = "sk-ant-fake-key-for-tests"


@pytest.fixture
def proxy(fake_api: FakeAnthropic) -> Iterator[ApiProxy]:
    proxy = ApiProxy(fake_api.url, {"x-api-key": OPERATOR_KEY})
    proxy.start()
    yield proxy
    proxy.stop()


def _message(prompt: str, stream: bool = True, **extra: object) -> bytes:
    body = {"model": "claude-fake", "max_tokens": 100, "stream": stream, **extra}
    body["messages"] = [{"role": "user", "content": prompt}]
    return json.dumps(body).encode()


def _post(
    conn: http.client.HTTPConnection, body: bytes, path: str = "/v1/messages", **headers: str
) -> http.client.HTTPResponse:
    conn.request("POST", path, body=body, headers={"content-type": "application/json", **headers})
    return conn.getresponse()


def _connect(proxy: ApiProxy) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)


def _run_cli(claude_bin: str, claude_env: dict[str, str], proxy: ApiProxy, token: str, prompt: str):
    env = {**claude_env, "ANTHROPIC_BASE_URL": proxy.url, "ANTHROPIC_API_KEY": token}
    started = time.monotonic()
    done = subprocess.run(
        [claude_bin, "-p", prompt, "--output-format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done, json.loads(done.stdout), time.monotonic() - started


def _assert_refusal(response: http.client.HTTPResponse, status: int, kind: str) -> None:
    assert response.status == status
    assert response.getheader("x-should-retry") == "false"
    body = json.loads(response.read())
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    assert body["error"]["message"]


# -- the real CLI ---------------------------------------------------------------------------


@pytest.mark.cli
def test_a_cli_with_a_capability_token_gets_its_answer_and_the_api_sees_the_operators_key(
    claude_bin, claude_env, fake_api, proxy
):
    token = proxy.grant()
    done, result, _ = _run_cli(claude_bin, claude_env, proxy, token, "[[say: through the proxy]]")
    assert done.returncode == 0, done.stderr
    assert result["result"] == "through the proxy"
    assert not result["is_error"]
    turns = fake_api.conversation_requests()
    assert turns, "the CLI's request reached the fake API"
    for request in fake_api.requests:
        assert request.headers["x-api-key"] == OPERATOR_KEY
        assert "authorization" not in request.headers
        assert not any(token in value for value in request.headers.values())


@pytest.mark.cli
@pytest.mark.parametrize("which", ["revoked", "wrong"])
def test_a_revoked_or_wrong_token_ends_the_cli_turn_with_an_error_at_once(
    claude_bin, claude_env, fake_api, proxy, which
):
    token = proxy.grant()
    if which == "revoked":
        proxy.revoke(token)
    else:
        token = "aicli-cap-not-a-granted-token"
    done, result, elapsed = _run_cli(claude_bin, claude_env, proxy, token, "[[say: never]]")
    assert done.returncode != 0
    assert result["is_error"]
    # Without x-should-retry: false the CLI would retry with backoff for minutes.
    assert elapsed < 15
    assert fake_api.requests == []


@pytest.mark.cli
def test_a_long_lived_cli_runs_turn_after_turn_on_one_kept_alive_connection(
    claude_bin, claude_env, fake_api, proxy, workdir
):
    env = {**claude_env, "ANTHROPIC_BASE_URL": proxy.url, "ANTHROPIC_API_KEY": proxy.grant()}
    stream = ["--input-format", "stream-json", "--output-format", "stream-json", "--verbose"]
    cli = subprocess.Popen(
        [claude_bin, "-p", *stream, "--allowedTools", "Bash"],
        env=env,
        cwd=workdir,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert cli.stdin is not None and cli.stdout is not None
    results, client_ports = [], set()
    try:
        for prompt in ["[[bash: echo from the tool]]", "[[say: second]]", "[[say: third]]"]:
            message = {"type": "user", "message": {"role": "user", "content": prompt}}
            cli.stdin.write(json.dumps(message) + "\n")
            cli.stdin.flush()
            while (line := json.loads(cli.stdout.readline()))["type"] != "result":
                pass
            results.append((line["result"], line["is_error"]))
            client_ports |= {
                c.raddr.port
                for c in psutil.Process().net_connections(kind="tcp")
                if c.laddr.port == proxy.port and c.raddr and c.status == psutil.CONN_ESTABLISHED
            }
    finally:
        cli.stdin.close()
        cli.wait(timeout=30)
    assert results == [("Tool said: from the tool", False), ("second", False), ("third", False)]
    assert len(fake_api.requests) == 4
    assert {r.headers["x-api-key"] for r in fake_api.requests} == {OPERATOR_KEY}
    assert len(client_ports) == 1


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["missing", "wrong", "revoked"])
def test_a_request_without_a_live_token_is_refused_like_the_api_refuses_it(fake_api, proxy, which):
    token = proxy.grant()
    headers = {"wrong": {"x-api-key": "sk-ant-real-looking"}, "missing": {}}.get(which)
    if which == "revoked":
        proxy.revoke(token)
        headers = {"authorization": f"Bearer {token}"}
    conn = _connect(proxy)
    _assert_refusal(_post(conn, _message("[[say: no]]"), **headers), 401, "authentication_error")
    # The refused body was read, so the connection serves the next request.
    sock = conn.sock
    live = proxy.grant()
    response = _post(conn, _message("[[say: yes]]", stream=False), **{"x-api-key": live})
    assert response.status == 200
    assert json.loads(response.read())["content"][0]["text"] == "yes"
    assert conn.sock is sock
    assert len(fake_api.requests) == 1


def test_a_bearer_token_is_swapped_for_the_auth_it_was_granted_with(fake_api, proxy):
    token = proxy.grant({"Authorization": "Bearer tenant-own-token"})
    response = _post(
        _connect(proxy), _message("[[say: hi]]", stream=False), authorization=f"Bearer {token}"
    )
    assert response.status == 200
    response.read()
    (request,) = fake_api.requests
    assert request.headers["authorization"] == "Bearer tenant-own-token"
    assert "x-api-key" not in request.headers


def test_hop_by_hop_headers_stay_on_their_hop(fake_api, proxy):
    hop = {
        "connection": "keep-alive, x-hop-private",
        "x-hop-private": "1",
        "keep-alive": "timeout=5",
        "te": "trailers",
        "proxy-authorization": "Basic c2VjcmV0",
        "x-stainless-retry-count": "0",
    }
    response = _post(
        _connect(proxy),
        _message("[[say: hi]]", stream=False),
        **{"x-api-key": proxy.grant(), **hop},
    )
    assert response.status == 200
    response.read()
    (request,) = fake_api.requests
    for name in ("x-hop-private", "keep-alive", "te", "proxy-authorization"):
        assert name not in request.headers
    assert request.headers["x-stainless-retry-count"] == "0"
    assert request.headers["host"] == fake_api.url.removeprefix("http://")


@pytest.mark.parametrize(
    "target",
    [
        "http://example.com/v1/messages",
        "https://127.0.0.1:1/v1/messages",
        "//example.com/v1/messages",
        "/v1/../../elsewhere",
        "/v1/%2e%2e/%2E%2E/elsewhere",
        "/v1/..%2f..%2felsewhere",
    ],
)
def test_the_proxy_is_no_open_relay(fake_api, proxy, target):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        head = f"GET {target} HTTP/1.1\r\nHost: example.com\r\nx-api-key: {proxy.grant()}\r\n"
        sock.sendall(head.encode() + b"\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        _assert_refusal(response, 400, "invalid_request_error")
    assert fake_api.requests == []


def test_an_unreachable_api_is_a_502_the_cli_does_not_retry():
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        closed_port = placeholder.getsockname()[1]
    proxy = ApiProxy(f"http://127.0.0.1:{closed_port}", {"x-api-key": OPERATOR_KEY})
    proxy.start()
    try:
        response = _post(_connect(proxy), _message("[[say: hi]]"), **{"x-api-key": proxy.grant()})
        _assert_refusal(response, 502, "api_error")
    finally:
        proxy.stop()


# -- bodies and streams ---------------------------------------------------------------------


def test_a_streamed_answer_reaches_the_client_while_it_is_produced(proxy):
    """The fake streams 20 text pieces over 2 s: they must come one by one, not at the end."""
    conn = _connect(proxy)
    started = time.monotonic()
    text = "twenty pieces of text, each two letters"
    prompt = f"[[say: {text}]] [[slow: 2]]"
    response = _post(conn, _message(prompt), **{"x-api-key": proxy.grant()})
    assert response.status == 200
    received, pieces_at = b"", []
    while piece := response.read1(65536):
        received += piece
        pieces_at.extend([time.monotonic() - started] * piece.count(b"event: content_block_delta"))
    assert len(pieces_at) == 20
    assert pieces_at[0] < 0.6, "the first piece came late: the answer was held back"
    assert pieces_at[-1] > 1.8
    assert len({round(at, 1) for at in pieces_at}) > 10
    deltas = [json.loads(line[6:]) for line in received.split(b"\n") if line.startswith(b"data:")]
    assert "".join(d["delta"].get("text", "") for d in deltas if "delta" in d) == text


def test_a_large_request_body_arrives_intact(fake_api, proxy):
    system = "".join(chr(0x20 + (i * 7919) % 0x5E) for i in range(20 * 1024 * 1024))
    body = _message("[[say: big]]", stream=False, system=system)
    assert len(body) > 20 * 1024 * 1024
    response = _post(_connect(proxy), body, **{"x-api-key": proxy.grant()})
    assert response.status == 200
    response.read()
    (request,) = fake_api.requests
    assert request.body["system"] == system
    assert request.headers["content-length"] == str(len(body))


def test_connections_are_kept_alive_on_both_sides(fake_api, proxy):
    token = proxy.grant()
    conn = _connect(proxy)
    client_sockets, upstream_ports = set(), set()
    fake_port = int(fake_api.url.rsplit(":", 1)[1])
    for n in range(3):
        response = _post(conn, _message(f"[[say: {n}]]", stream=False), **{"x-api-key": token})
        assert json.loads(response.read())["content"][0]["text"] == str(n)
        client_sockets.add(conn.sock)
        upstream_ports |= {
            c.laddr.port
            for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and c.raddr.port == fake_port and c.status == psutil.CONN_ESTABLISHED
        }
    assert len(client_sockets) == 1
    assert len(upstream_ports) == 1
    # A streamed answer the API ends by closing comes chunked, on the same connection.
    response = _post(conn, _message("[[say: streamed]]"), **{"x-api-key": token})
    assert response.getheader("transfer-encoding") == "chunked"
    assert b"message_stop" in response.read()
    response = _post(conn, _message("[[say: after]]", stream=False), **{"x-api-key": token})
    assert response.status == 200
    response.read()
    assert conn.sock in client_sockets


@pytest.mark.parametrize("cut", ["kept link", "new link", "every link"])
def test_a_link_cut_before_the_answer_is_tried_once_more_on_a_fresh_one(cut):
    """The API closes a kept link as the next request goes out on it, or resets a new one
    (a full backlog): the request goes once more on a new link, and only once."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"
    accepted: list[socket.socket] = []

    def reset(sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def serve(listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            accepted.append(sock)
            _read_request(sock)
            if cut == "every link" or (cut == "new link" and len(accepted) == 1):
                reset(sock)
                continue
            sock.sendall(answer)
            if cut == "kept link" and len(accepted) == 1:
                _read_request(sock)  # the second request on this link: dropped unanswered
                sock.close()

    with socket.create_server(("127.0.0.1", 0)) as listener:
        threading.Thread(target=serve, args=(listener,), daemon=True).start()
        proxy = ApiProxy(f"http://127.0.0.1:{listener.getsockname()[1]}", {"x-api-key": "k"})
        proxy.start()
        try:
            conn = _connect(proxy)
            token = proxy.grant()
            if cut == "every link":
                _assert_refusal(_post(conn, b'{"n": 1}', **{"x-api-key": token}), 502, "api_error")
            else:
                for _ in range(2 if cut == "kept link" else 1):
                    response = _post(conn, b'{"n": 1}', **{"x-api-key": token})
                    assert (response.status, response.read()) == (200, b"{}")
            assert len(accepted) == 2
        finally:
            proxy.stop()
            listener.shutdown(socket.SHUT_RDWR)
            for sock in accepted:
                sock.close()


def _read_request(sock: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)


@pytest.fixture
def tls_upstream(tmp_path) -> Iterator[tuple[str, str, list[str]]]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate: its URL, the
    certificate's file, and the x-api-key of each request it answered."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            seen.append(self.headers["x-api-key"])
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", str(cert), seen
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("trusted", [True, False])
def test_an_https_api_is_reached_only_with_a_certificate_the_system_trusts(
    tls_upstream, monkeypatch, trusted
):
    url, cert, seen = tls_upstream
    if trusted:
        monkeypatch.setenv("SSL_CERT_FILE", cert)  # as if in the system's CA bundle
    proxy = ApiProxy(url, {"x-api-key": OPERATOR_KEY})
    proxy.start()
    try:
        response = _post(_connect(proxy), b'{"n": 1}', **{"x-api-key": proxy.grant()})
        if trusted:
            assert (response.status, response.read()) == (200, b"{}")
            assert seen == [OPERATOR_KEY]
        else:
            _assert_refusal(response, 502, "api_error")
            assert seen == []
    finally:
        proxy.stop()


# -- lifecycle ------------------------------------------------------------------------------


def test_stop_cuts_open_connections_and_frees_the_port(fake_api):
    proxy = ApiProxy(fake_api.url, {"x-api-key": OPERATOR_KEY})
    proxy.start()
    port, token = proxy.port, proxy.grant()
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)
    streaming = _connect(proxy)
    response = _post(streaming, _message("[[say: long]] [[slow: 30]]"), **{"x-api-key": token})
    assert response.read1(65536).startswith(b"event: message_start")
    wait_for(lambda: fake_api.requests, what="the streamed request upstream")

    started = time.monotonic()
    proxy.stop()
    proxy.stop()
    assert time.monotonic() - started < 5
    assert idle.recv(1) == b""
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        response.read()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()
    idle.close()


def test_connections_past_the_cap_are_closed_at_once(proxy, monkeypatch):
    monkeypatch.setattr(api_proxy, "MAX_CLIENTS", 2)
    token = proxy.grant()
    held = [_connect(proxy) for _ in range(2)]
    for conn in held:  # an answer on each: both are being served
        assert _post(conn, _message("[[say: held]]", stream=False), **{"x-api-key": token}).read()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as extra:
        assert extra.recv(1) == b""
    response = _post(held[0], _message("[[say: still]]", stream=False), **{"x-api-key": token})
    assert response.status == 200


def test_operator_upstream_reads_the_cli_s_own_variables():
    assert operator_upstream({}) == ("https://api.anthropic.com", {})
    assert operator_upstream({"ANTHROPIC_API_KEY": "sk"}) == (
        "https://api.anthropic.com",
        {"x-api-key": "sk"},
    )
    env = {"ANTHROPIC_BASE_URL": "http://127.0.0.1:9999/pre", "ANTHROPIC_AUTH_TOKEN": "tok"}
    assert operator_upstream(env) == ("http://127.0.0.1:9999/pre", {"authorization": "Bearer tok"})


def test_an_upstream_path_prefix_is_kept(fake_api):
    proxy = ApiProxy(fake_api.url + "/prefix/", {"x-api-key": OPERATOR_KEY})
    proxy.start()
    try:
        response = _post(_connect(proxy), _message("hi"), **{"x-api-key": proxy.grant()})
        assert response.status == 404  # the fake has no /prefix/v1/messages
        response.read()
        assert [r.path for r in fake_api.requests] == ["/prefix/v1/messages"]
    finally:
        proxy.stop()


def test_tokens_are_unguessable(proxy):
    tokens = {proxy.grant() for _ in range(100)}
    assert len(tokens) == 100
    assert all(t.startswith("aicli-cap-") and len(t) >= len("aicli-cap-") + 43 for t in tokens)
