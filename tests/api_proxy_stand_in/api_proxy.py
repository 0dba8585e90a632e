"""TEMPORARY stand-in for aicli/actors/api_proxy.py (being written on its own branch), with
its interface: a loopback HTTP proxy that lets through requests bearing a granted token and
sends them upstream with the real credentials in their place. Plain HTTP upstreams only
(the fake API). Delete on merge."""

from __future__ import annotations

import http.client
import secrets
import threading
import urllib.parse
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


def operator_upstream(env: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    upstream = env.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com"
    if env.get("ANTHROPIC_API_KEY"):
        return upstream, {"x-api-key": env["ANTHROPIC_API_KEY"]}
    if env.get("ANTHROPIC_AUTH_TOKEN"):
        return upstream, {"authorization": f"Bearer {env['ANTHROPIC_AUTH_TOKEN']}"}
    return upstream, {}


class ApiProxy:
    def __init__(self, upstream: str, auth: Mapping[str, str]) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.auth = dict(auth)
        self.tokens: dict[str, dict[str, str]] = {}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                token = self.headers.get("x-api-key") or (
                    self.headers.get("authorization", "").removeprefix("Bearer ")
                )
                auth = proxy.tokens.get(token)
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                if auth is None:
                    self.send_response(401)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in _HOP | {"x-api-key", "authorization"}
                }
                headers.update(auth)
                up = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port)
                path = proxy.upstream.path.rstrip("/") + self.path
                up.request(self.command, path, body=body, headers=headers)
                answer = up.getresponse()
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in _HOP:
                        self.send_header(k, v)
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                while chunk := answer.read1(65536):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                up.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def grant(self, auth: Mapping[str, str] | None = None) -> str:
        token = f"aicli-{secrets.token_urlsafe(24)}"
        self.tokens[token] = dict(self.auth if auth is None else auth)
        return token

    def revoke(self, token: str) -> None:
        self.tokens.pop(token, None)
