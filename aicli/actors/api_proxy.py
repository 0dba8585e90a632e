"""The credential-injecting proxy between sandboxed Claude CLIs and the Messages API.

A sandboxed CLI must not hold the operator's Anthropic credentials (anything
its tools can read, a tenant can read). It gets this proxy's loopback URL as
``ANTHROPIC_BASE_URL`` and a capability token as ``ANTHROPIC_API_KEY``; the
proxy swaps the token for the credentials it was granted with, forwards the
request to the real API and streams the answer back unchanged. Revoking the
token (the session closed) cuts the CLI off at once.

It runs inside ``aicli serve``: a thread accepts, and one thread serves each
client connection (the CLI keeps its connection alive across turns), so the
actors never wait on it.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections.abc import Mapping

from aicli.actors.proxy_relay import Headers, serve_client
from aicli.actors.proxy_upstream import Upstream, shut

log = logging.getLogger(__name__)

DEFAULT_UPSTREAM = "https://api.anthropic.com"
TOKEN_PREFIX = "aicli-cap-"
STOP_WAIT_S = 5.0
# A thread serves each connection: past this many, a new one is closed at once,
# so that a runaway client cannot spend the server's threads.
MAX_CLIENTS = 256


def operator_upstream(env: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The API and credentials the operator gave aicli, as the CLI itself would read them.

    Both headers go up when both variables are set, as the Anthropic SDK sends them.
    """
    auth = {}
    if key := env.get("ANTHROPIC_API_KEY"):
        auth["x-api-key"] = key
    if token := env.get("ANTHROPIC_AUTH_TOKEN"):
        auth["authorization"] = f"Bearer {token}"
    return env.get("ANTHROPIC_BASE_URL") or DEFAULT_UPSTREAM, auth


def _encoded(auth: Mapping[str, str]) -> Headers:
    return tuple(
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in auth.items()
    )


class ApiProxy:
    """``ApiProxy(upstream, auth)``; ``start()``, then ``grant()`` a token per session."""

    def __init__(self, upstream: str, auth: Mapping[str, str]) -> None:
        self._upstream = Upstream(upstream)
        self._operator = _encoded(auth)
        self._grants: dict[str, Headers] = {}
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._clients: dict[socket.socket, threading.Thread] = {}
        self._stopped = False

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("The API proxy has not started.")
        return self._listener.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._listener = listener
        self._acceptor = threading.Thread(
            target=self._accept, args=(listener,), name="api-proxy", daemon=True
        )
        self._acceptor.start()

    def grant(self, auth: Mapping[str, str] | None = None) -> str:
        """A new capability token standing for ``auth`` (None: the operator's credentials)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self._grants[token] = self._operator if auth is None else _encoded(auth)
        return token

    def revoke(self, token: str) -> None:
        """From now on ``token`` is refused (requests already under way finish)."""
        self._grants.pop(token, None)

    def stop(self) -> None:
        """Stop listening and cut every connection; the threads end within a moment."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            clients = dict(self._clients)
        if self._listener is not None:
            shut(self._listener)
        # Clients first: an answer cut upstream must not look ended to them.
        for sock in clients:
            shut(sock)
        self._upstream.close()
        deadline = time.monotonic() + STOP_WAIT_S
        for thread in [self._acceptor, *clients.values()]:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        if self._listener is not None:
            self._listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return  # stop() shut the listener
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(
                target=self._serve, args=(sock,), name="api-proxy-client", daemon=True
            )
            with self._lock:
                if self._stopped:
                    sock.close()
                    return
                full = len(self._clients) >= MAX_CLIENTS
                if not full:
                    self._clients[sock] = thread
            if full:
                log.warning("api proxy: %d connections open, refusing one more", MAX_CLIENTS)
                sock.close()
                continue
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            serve_client(sock, self._grants.get, self._upstream)
        finally:
            with self._lock:
                self._clients.pop(sock, None)
