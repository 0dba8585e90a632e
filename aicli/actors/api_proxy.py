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

from aicli.actors.proxy_relay import Headers, Refused, serve_client
from aicli.actors.proxy_upstream import Upstream, shut

log = logging.getLogger(__name__)

DEFAULT_UPSTREAM = "https://api.anthropic.com"
TOKEN_PREFIX = "aicli-cap-"
STOP_WAIT_S = 5.0
# A thread serves each connection: past this many, a new one is closed at once,
# so that a runaway client cannot spend the server's threads.
MAX_CLIENTS = 256
# Connections that one token's requests came on at once. The sandbox reaches this port,
# so a tenant can open connections at will: without a cap per token, one tenant would
# hold every place and the CLIs of all others could not reach the API.
MAX_PER_TOKEN = 32


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
        self._clients: dict[socket.socket, threading.Thread] = {}  # oldest first
        self._bound: dict[socket.socket, str] = {}  # the token a connection's requests use
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
                full = len(self._clients) >= MAX_CLIENTS and not self._evict_one_unbound()
                if not full:
                    self._clients[sock] = thread
            if full:
                log.warning("api proxy: %d connections open, refusing one more", MAX_CLIENTS)
                sock.close()
                continue
            thread.start()

    def _evict_one_unbound(self) -> bool:
        """Make room by cutting the oldest connection no request with a live token came on
        yet: a CLI sends its request as soon as it connects, so those are idle openings that
        would otherwise hold the places every tenant shares. Under ``_lock``."""
        victim = next((sock for sock in self._clients if sock not in self._bound), None)
        if victim is None:
            return False
        shut(victim)  # its thread closes it
        del self._clients[victim]
        return True

    def _admit(self, sock: socket.socket, token: str) -> Headers | None:
        """The auth ``token`` stands for, binding ``sock`` to it; ``Refused`` (429) when the
        token already has ``MAX_PER_TOKEN`` connections."""
        auth = self._grants.get(token)
        if auth is None:
            return None
        with self._lock:
            if self._bound.get(sock) != token:
                if sum(1 for bound in self._bound.values() if bound == token) >= MAX_PER_TOKEN:
                    raise Refused(
                        429,
                        "rate_limit_error",
                        f"more than {MAX_PER_TOKEN} connections at once with this token",
                    )
                self._bound[sock] = token
        return auth

    def _serve(self, sock: socket.socket) -> None:
        try:
            serve_client(sock, lambda token: self._admit(sock, token), self._upstream)
        finally:
            with self._lock:
                self._clients.pop(sock, None)
                self._bound.pop(sock, None)
