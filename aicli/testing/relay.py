"""A TCP relay on loopback that a test can pause, cut or take down: fault injection.

Why it exists: a node that shares a PostgreSQL database with others must stop
acting on its sessions (fence itself) once it can no longer renew its lease,
before a peer takes them over, and its writes that arrive late must be
refused. Testing that needs a database connection that fails the way networks
fail, for one node and not the others, without touching the machine's
PostgreSQL server. Run a node's connections through a relay and:

* ``pause()``: a partition TCP does not notice. Every socket stays open, no byte
  moves in either direction (not even a FIN or a reset); queries just hang.
  Bytes already sent stay queued and are delivered on ``resume()``: the late
  writes of a node that was cut off.
* ``cut()``: every current connection ends abruptly (a reset), as when the
  server process dies; new connections are relayed as before.
* ``down()``: ``cut()``, and every new connection is reset at once until
  ``resume()``: the server is restarting. Routing every node through a relay
  of its own and taking all of them down is how tests simulate "PostgreSQL
  unreachable for X seconds" without restarting the real server.

One thread per relay runs a ``selectors`` loop over every socket (no busy
loop, no thread per connection); the control methods may be called from any
thread, and each returns once the loop has applied it.

    with Relay("127.0.0.1", 5432) as relay:
        url = relay.url_for("postgresql://postgres@127.0.0.1:5432/test")
        ...
        relay.pause()
        relay.resume()
"""

from __future__ import annotations

import contextlib
import errno
import queue
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Relay"]

_CHUNK = 65536
# Read no more from one side while this much waits to be written to the other.
_MAX_BUFFERED = 1 << 20
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` abruptly: the peer gets a reset, not an orderly end."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    with contextlib.suppress(OSError):
        sock.close()


class _Side:
    """One socket of a relayed connection, and the bytes waiting to be written to it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.outgoing = bytearray()
        self.read_closed = False  # its peer sent FIN: no more to read from it
        self.write_shut = False  # we sent FIN to it
        self.registered = 0  # the selector events it is registered for


class _Pair:
    """One relayed connection: the client's socket and ours to the target."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = _Side(client)
        self.upstream = _Side(upstream)
        self.closed = False

    def other(self, side: _Side) -> _Side:
        return self.upstream if side is self.client else self.client


class Relay:
    """Forwards every connection to ``127.0.0.1:port`` on to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self._listener = socket.create_server((host, 0), backlog=128)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_reader, selectors.EVENT_READ, "wake")
        self._commands: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]] = (
            queue.SimpleQueue()
        )
        self._pairs: set[_Pair] = set()
        self._paused = False
        self._down = False
        self._closed = False
        self._state_lock = threading.Lock()  # for the counters read from other threads
        self._accepted = 0
        self._forwarded = 0
        self._thread = threading.Thread(
            target=self._run, name=f"relay-{self.port}->{target_port}", daemon=True
        )
        self._thread.start()

    # The control side, from any thread.

    def url_for(self, database_url: str) -> str:
        """``database_url`` with its host and port replaced by this relay's (user, query kept)."""
        parts = urlsplit(database_url)
        userinfo, _, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}@" if userinfo else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}{self.host}:{self.port}"))

    def pause(self) -> None:
        """Stop moving bytes either way; sockets stay open and new ones are accepted and held."""
        self._call(self._do_pause)

    def resume(self) -> None:
        """Forward again (after ``pause`` or ``down``); held bytes are delivered now."""
        self._call(self._do_resume)

    def cut(self) -> None:
        """Reset every current connection; later ones are relayed as before."""
        self._call(self._do_cut)

    def down(self) -> None:
        """Reset every current connection and every new one until ``resume``: a server down."""
        self._call(self._do_down)

    def close(self) -> None:
        """Reset every connection, stop listening and end the thread. Idempotent."""
        if self._closed:
            return
        if self._thread.is_alive():
            self._call(self._do_close)
            self._thread.join(timeout=5)
        self._closed = True

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def is_down(self) -> bool:
        return self._down

    @property
    def connections(self) -> int:
        """Connections relayed right now."""
        with self._state_lock:
            return len(self._pairs)

    @property
    def accepted(self) -> int:
        """Connections accepted so far (reset ones included)."""
        with self._state_lock:
            return self._accepted

    @property
    def forwarded_bytes(self) -> int:
        """Bytes delivered so far, both directions together."""
        with self._state_lock:
            return self._forwarded

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "down" if self._down else "paused" if self._paused else "up"
        return f"Relay(127.0.0.1:{self.port} -> {self.target[0]}:{self.target[1]}, {state})"

    def _call(self, command: Callable[[], None]) -> None:
        if self._closed or not self._thread.is_alive():
            raise RuntimeError(f"{self!r} is closed")
        done = threading.Event()
        self._commands.put((command, done))
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"x")
        if not done.wait(10):
            raise RuntimeError(f"{self!r}: its thread did not apply the command")

    # The loop's side: everything below runs on the relay's thread only.

    def _run(self) -> None:
        try:
            while not self._closed:
                for key, mask in self._selector.select():
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wakes()
                    else:
                        pair, side = key.data
                        self._serve(pair, side, mask)
                    if self._closed:
                        break
                self._apply_commands()
        finally:
            for pair in list(self._pairs):
                self._drop(pair, abrupt=True)
            for sock in (self._listener, self._wake_reader, self._wake_writer):
                with contextlib.suppress(OSError, KeyError, ValueError):
                    self._selector.unregister(sock)
                sock.close()
            self._selector.close()
            self._closed = True
            self._apply_commands()  # release anyone still waiting

    def _drain_wakes(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._wake_reader.recv(4096):
                pass

    def _apply_commands(self) -> None:
        while True:
            try:
                command, done = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                if not self._closed:
                    command()
            finally:
                done.set()

    def _do_pause(self) -> None:
        self._paused = True
        for pair in self._pairs:
            self._update(pair)

    def _do_resume(self) -> None:
        self._paused = False
        self._down = False
        for pair in list(self._pairs):
            self._update(pair)

    def _do_cut(self) -> None:
        for pair in list(self._pairs):
            self._drop(pair, abrupt=True)

    def _do_down(self) -> None:
        self._down = True
        self._do_cut()

    def _do_close(self) -> None:
        self._closed = True

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: try again on the next event
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return
                raise
            with self._state_lock:
                self._accepted += 1
            if self._down:
                _reset(client)
                continue
            try:
                # Loopback in tests: connecting takes microseconds, or is refused at once.
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            for sock in (client, upstream):
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(client, upstream)
            with self._state_lock:
                self._pairs.add(pair)
            self._update(pair)

    def _serve(self, pair: _Pair, side: _Side, mask: int) -> None:
        if pair.closed or self._paused:
            return
        try:
            if mask & selectors.EVENT_READ:
                self._read(pair, side)
            if not pair.closed and mask & selectors.EVENT_WRITE:
                self._write(pair, side)
        except OSError:  # a reset, or a broken pipe: end both sides at once
            self._drop(pair, abrupt=True)
            return
        if not pair.closed:
            self._update(pair)

    def _read(self, pair: _Pair, side: _Side) -> None:
        other = pair.other(side)
        try:
            data = side.sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        if data:
            other.outgoing += data
            self._write(pair, other)  # most often it all goes at once
        else:
            side.read_closed = True

    def _write(self, pair: _Pair, side: _Side) -> None:
        if side.outgoing:
            try:
                sent = side.sock.send(side.outgoing)
            except (BlockingIOError, InterruptedError):
                return
            del side.outgoing[:sent]
            with self._state_lock:
                self._forwarded += sent

    def _update(self, pair: _Pair) -> None:
        """Register each socket for what it needs now; pass on FINs; end a finished pair."""
        if pair.closed:
            return
        if not self._paused:
            for side in (pair.client, pair.upstream):
                other = pair.other(side)  # ``side`` receives what ``other`` sends
                if other.read_closed and not side.outgoing and not side.write_shut:
                    with contextlib.suppress(OSError):
                        side.sock.shutdown(socket.SHUT_WR)
                    side.write_shut = True
            if pair.client.write_shut and pair.upstream.write_shut:
                self._drop(pair, abrupt=False)
                return
        for side in (pair.client, pair.upstream):
            other = pair.other(side)
            wanted = 0
            if not self._paused:
                if not side.read_closed and len(other.outgoing) < _MAX_BUFFERED:
                    wanted |= selectors.EVENT_READ
                if side.outgoing:
                    wanted |= selectors.EVENT_WRITE
            if wanted == side.registered:
                continue
            if side.registered and wanted:
                self._selector.modify(side.sock, wanted, (pair, side))
            elif wanted:
                self._selector.register(side.sock, wanted, (pair, side))
            else:
                self._selector.unregister(side.sock)
            side.registered = wanted

    def _drop(self, pair: _Pair, *, abrupt: bool) -> None:
        if pair.closed:
            return
        pair.closed = True
        for side in (pair.client, pair.upstream):
            if side.registered:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(side.sock)
                side.registered = 0
            if abrupt:
                _reset(side.sock)
            else:
                side.sock.close()
        with self._state_lock:
            self._pairs.discard(pair)
