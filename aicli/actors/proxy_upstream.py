"""The API proxy's side toward the real Messages API: one base URL and a pool of kept-alive links.

The CLI sends a request every turn; opening a TCP (and TLS) connection for each
would cost more than the whole proxy is allowed to add, so finished links wait
here for the next request. A link the server closed while it waited is
noticed before reuse where possible (the socket reads as ready); the relay
tries once more on a fresh link when one is cut before answering.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11

CONNECT_TIMEOUT_S = 10.0
# A model may think for minutes between bytes only in theory: the API sends
# pings every few seconds while it streams. This ends a link that has died silently.
READ_TIMEOUT_S = 600.0
# How long a link may wait for reuse, and how many may wait: servers end idle
# links on their own schedule, and one used long ago is likelier to be dead.
IDLE_S = 30.0
MAX_IDLE = 16
RECV_BYTES = 65536


@dataclass(eq=False)
class Link:
    """One connection to the upstream with its HTTP/1.1 state."""

    sock: socket.socket
    http: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    idle_since: float = 0.0

    def send(self, event: h11.Event) -> None:
        data = self.http.send(event)
        if data:
            self.sock.sendall(data)

    def next_event(self) -> h11.Event:
        """The next event of the answer, reading as needed; EOF ends a close-delimited body."""
        while True:
            event = self.http.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.http.receive_data(self.sock.recv(RECV_BYTES))


class Upstream:
    """Where requests go (scheme, host, port, path prefix) and the links kept open to it."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"The API proxy needs an http(s) upstream URL, not {base_url!r}.")
        self.host = parts.hostname
        self.tls = parts.scheme == "https"
        default_port = 443 if self.tls else 80
        self.port = parts.port or default_port
        netloc_host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = (
            netloc_host if self.port == default_port else f"{netloc_host}:{self.port}"
        ).encode()
        self.prefix = parts.path.rstrip("/").encode()
        # The system's CA bundle, hostname checked: the credentials go only to the real API.
        self._tls_context = ssl.create_default_context() if self.tls else None
        self._idle: list[Link] = []
        self._busy: set[Link] = set()
        self._lock = threading.Lock()
        self._closed = False

    def acquire(self) -> Link:
        """A live idle link if there is one, else a new connection (OSError if none can be made)."""
        now = time.monotonic()
        with self._lock:
            while self._idle:
                link = self._idle.pop()
                if now - link.idle_since < IDLE_S and not _readable(link.sock):
                    self._busy.add(link)
                    return link
                link.sock.close()
        link = Link(self._connect())
        with self._lock:
            if self._closed:
                link.sock.close()
                raise ConnectionAbortedError("The API proxy is stopping.")
            self._busy.add(link)
        return link

    def release(self, link: Link) -> None:
        """Keep a link whose exchange ended cleanly on both sides; close any other."""
        http = link.http
        reusable = http.our_state is h11.DONE and http.their_state is h11.DONE
        if reusable:
            http.start_next_cycle()
            link.idle_since = time.monotonic()
        with self._lock:
            self._busy.discard(link)
            if reusable and not self._closed and len(self._idle) < MAX_IDLE:
                self._idle.append(link)
                return
        link.sock.close()

    def discard(self, link: Link) -> None:
        with self._lock:
            self._busy.discard(link)
        link.sock.close()

    def close(self) -> None:
        """Close idle links, and cut busy ones so that the threads waiting on them wake."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = list(self._busy)
        for link in idle:
            link.sock.close()
        for link in busy:
            shut(link.sock)

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT_S)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls_context is not None:
                sock = self._tls_context.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(READ_TIMEOUT_S)
        except BaseException:
            sock.close()
            raise
        return sock


def _readable(sock: socket.socket) -> bool:
    """An idle link has nothing to say: if it reads as ready, the server closed it (or erred)."""
    try:
        ready, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(ready)


def shut(sock: socket.socket) -> None:
    """Wake whoever waits on ``sock`` (a blocked accept or recv); its owner closes it."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
