"""Wake-ups between the aicli nodes that share one PostgreSQL database.

The database is the queue: what a node must do is always in its rows, and a
node that scans them finds all of it. A signal only tells peers that
something changed *now*, so they look at once instead of at their next
periodic rescan. That makes a lost signal cost latency, never work, and the
design leans on it:

* LISTEN/NOTIFY delivers only to sessions listening at the time. A listener
  that lost its connection missed whatever was sent meanwhile, so after every
  reconnect ``on_reconnect`` tells the caller to rescan.
* A signal is sent by a connection of its own, right *after* the commit it
  announces, not by a ``pg_notify`` inside that transaction: the hot write path
  keeps its statements and its pooled connection to itself, and ``send`` only
  appends to a queue. A crash between the commit and the send loses a wake,
  which the periodic rescan covers.
* The sender sends everything queued in one round trip, so a burst of writes
  costs one statement, not one per write; duplicates in a batch collapse.

Each ``Signals`` holds two connections outside the pool, on daemon threads:
the sender's and the listener's. Short keepalives and a TCP user timeout (on
both ends) notice a vanished peer within seconds. On the server's end that
matters as much: a backend that can no longer deliver to its listener holds
back PostgreSQL's one notification queue for every session of the server.

Nodes in different schemas of one database share no rows, so they must not
wake each other: the channel is named after the schema the connection works in.
Every payload carries a random token of the sending ``Signals`` (``"<token>
<key>"``), so a node does not wake itself. (A wake sent by hand from psql, e.g.
``NOTIFY aicli_..., 'psql <key>'``, reaches every node.)
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import psycopg2
from psycopg2 import extensions as pg_extensions

from aicli.storage import database

log = logging.getLogger(__name__)

APPLICATION_NAME = "aicli signals"  # what operators see in pg_stat_activity
# PostgreSQL refuses payloads of 8000 bytes; the token and its space need a few.
MAX_PAYLOAD_BYTES = 7900

_POLL_S = 1.0  # the listener's select timeout
_IDLE_CHECK_S = 5.0  # silence after which the listener asks whether its server is still there
_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.1, 2.0
_CLOSE_WAIT_S = 1.0

_CLIENT_SETTINGS: dict[str, Any] = {
    "application_name": APPLICATION_NAME,
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
}
if pg_extensions.libpq_version() >= 120000:
    # Unacknowledged data (a query to a server cut off) fails after 5 s, not minutes.
    _CLIENT_SETTINGS["tcp_user_timeout"] = 5000

_NOTIFY = "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p"


def signals_for(
    database_url: str, on_signal: Callable[[str], None], on_reconnect: Callable[[], None]
) -> Signals | None:
    """Signals between the nodes of ``database_url`` (not started), or None for SQLite.

    A SQLite file serves one node, which has no peer to wake.
    """
    kind, _params = database.parse(database_url)
    if kind == database.SQLITE:
        return None
    return Signals(database_url, on_signal, on_reconnect)


class Signals:
    """Sends and hears the wake-ups of the nodes on one PostgreSQL schema.

    ``on_signal(key)`` runs for every key a peer sent; ``on_reconnect()`` runs
    when the listener is back after a time it could not listen, and signals may
    have been missed. Both run on the listener's thread: they should be quick
    (hand the work on); what they raise is logged and ignored.
    """

    def __init__(
        self,
        database_url: str,
        on_signal: Callable[[str], None],
        on_reconnect: Callable[[], None],
    ) -> None:
        kind, params = database.parse(database_url)
        if kind != database.POSTGRES:
            raise ValueError("signals need a PostgreSQL database; a SQLite one has no peers")
        driver = {key: value for key, value in params.items() if key not in database.POOL_SETTINGS}
        # Ours win over the URL's: they are what makes a lost peer show within seconds.
        driver.update(_CLIENT_SETTINGS)
        where = database.redact_url(database_url)
        self._token = secrets.token_hex(4)
        self._stopped = threading.Event()
        self._sender = _Sender(_Link(driver, where, "sender", self._stopped))
        self._listener = _Listener(
            _Link(driver, where, "listener", self._stopped), self._token, on_signal, on_reconnect
        )
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Connect and listen, on two daemon threads; returns at once, even with the server down."""
        if self._threads or self._stopped.is_set():
            return
        self._threads = [
            threading.Thread(target=self._sender.run, name="aicli-signals-send", daemon=True),
            threading.Thread(target=self._listener.run, name="aicli-signals-listen", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def send(self, key: str) -> None:
        """Wake the peers about ``key``, soon; never blocks (the sender thread sends it).

        Raises ValueError for a key PostgreSQL would refuse: too long, or with a NUL.
        """
        if len(key.encode()) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"a signal's payload is at most {MAX_PAYLOAD_BYTES} bytes (UTF-8)")
        if "\0" in key:
            raise ValueError("a signal's payload cannot contain NUL characters")
        if not self._stopped.is_set():
            self._sender.queue(f"{self._token} {key}")

    def wait_listening(self, timeout: float) -> bool:
        """Whether the listener listens, waiting up to ``timeout`` s for it to; signals sent
        before that are not heard."""
        return self._listener.listening.wait(timeout)

    def close(self) -> None:
        """Stop both threads within about a second; idempotent.

        What is queued goes out first if the sender is connected (one round trip).

        A thread stuck on a database that does not answer ends (and closes its
        connection) when the driver gives up on it; ``close`` does not wait for that.
        """
        self._stopped.set()
        self._sender.wake()
        self._listener.wake()
        deadline = time.monotonic() + _CLOSE_WAIT_S
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [thread.name for thread in self._threads if thread.is_alive()]
        if stuck:
            log.warning("signals: %s still waiting on the database; left to end", stuck)
        else:
            self._listener.dispose()


class _Link:
    """One role's connection, opened again after every loss, with backoff and few logs."""

    def __init__(
        self, params: dict[str, Any], where: str, role: str, stopped: threading.Event
    ) -> None:
        self._params = params
        self._where = where
        self._role = role
        self._stopped = stopped
        self._delay = 0.0  # before the next attempt: none for the first
        self._failed_attempts = 0
        self._opened_at = 0.0
        self.attempts = 0  # to connect, ever

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def open(self) -> tuple[Any, str] | None:
        """A connection and its schema's channel; None once stopped."""
        while not self._stopped.wait(self._delay):
            self.attempts += 1
            try:
                conn, channel = _open(self._params)
            except psycopg2.Error as exc:
                self._failed_attempts += 1
                self._back_off()
                # One warning per outage; the retries say the same again.
                level = logging.WARNING if self._failed_attempts == 1 else logging.DEBUG
                log.log(level, "signals: %s cannot connect to %s: %s", *self._said(exc))
                continue
            if self._failed_attempts:
                log.info("signals: %s connected to %s again", self._role, self._where)
            self._failed_attempts = 0
            self._opened_at = time.monotonic()
            return conn, channel
        return None

    def lost(self, exc: Exception) -> None:
        """Log the loss of a connection ``open`` gave; the next ``open`` waits first."""
        if time.monotonic() - self._opened_at >= _BACKOFF_MAX_S:
            self._delay = 0.0  # it had lived: a fresh start, not a flapping connection
        self._back_off()
        log.warning("signals: %s lost its connection to %s: %s", *self._said(exc))

    def _back_off(self) -> None:
        self._delay = min(max(self._delay * 2, _BACKOFF_FIRST_S), _BACKOFF_MAX_S)

    def _said(self, exc: Exception) -> tuple[str, str, str]:
        return self._role, self._where, _first_line(exc)


def _open(params: dict[str, Any]) -> tuple[Any, str]:
    conn = psycopg2.connect(**params)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(_session_settings(conn.server_version) + "SELECT current_schema()")
            schema = cursor.fetchone()[0]
    except BaseException:
        _close(conn)
        raise
    return conn, channel_of(schema)


def _session_settings(server_version: int) -> str:
    """The server's end of the keepalives: it must drop a listener that vanished."""
    settings = [
        "tcp_keepalives_idle = 5",
        "tcp_keepalives_interval = 2",
        "tcp_keepalives_count = 2",
    ]
    if server_version >= 120000:
        settings.append("tcp_user_timeout = 5000")
    if server_version >= 140000:  # an idle-session limit must not end these idle sessions
        settings.append("idle_session_timeout = 0")
    return "".join(f"SET {setting}; " for setting in settings)


def channel_of(schema: str | None) -> str:
    """The channel of the nodes working in ``schema``: nodes in other schemas don't hear it."""
    return "aicli_" + hashlib.sha256((schema or "").encode()).hexdigest()[:12]


def _close(conn: Any) -> None:
    with contextlib.suppress(psycopg2.Error):
        conn.close()


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")


def _unique(payloads: Iterable[str]) -> list[str]:
    """The payloads without repeats, in the order they first came."""
    return list(dict.fromkeys(payloads))


class _Sender:
    """Sends what ``queue`` collected, all in one round trip, and keeps it until it went."""

    def __init__(self, link: _Link) -> None:
        self._link = link
        self._queued: collections.deque[str] = collections.deque()
        self._wakeup = threading.Event()
        self._pending: list[str] = []  # taken from the queue, not yet sent: this thread's

    def queue(self, payload: str) -> None:
        self._queued.append(payload)
        self._wakeup.set()

    def wake(self) -> None:
        self._wakeup.set()

    def run(self) -> None:
        while (opened := self._link.open()) is not None:
            conn, channel = opened
            try:
                self._send_until_stopped(conn, channel)
            except psycopg2.Error as exc:  # the batch stays pending for the next connection
                self._link.lost(exc)
            finally:
                _close(conn)

    def _send_until_stopped(self, conn: Any, channel: str) -> None:
        with conn.cursor() as cursor:
            while True:
                if not self._pending:  # else a batch the last connection did not send
                    self._wakeup.wait()
                self._wakeup.clear()  # before taking: what comes later wakes the next round
                self._pending = _unique([*self._pending, *self._take()])
                if self._pending:
                    self._send(cursor, channel)
                if self._link.stopped:
                    return

    def _take(self) -> list[str]:
        taken = []
        with contextlib.suppress(IndexError):
            while True:
                taken.append(self._queued.popleft())
        return taken

    def _send(self, cursor: Any, channel: str) -> None:
        try:
            cursor.execute(_NOTIFY, (channel, self._pending))
        except psycopg2.Error:
            raise
        except Exception:  # a batch that can never go must not block the ones after it
            log.exception("signals: dropped %d signals that could not be sent", len(self._pending))
        self._pending = []


class _Listener:
    """Listens on the schema's channel and hands the peers' keys to ``on_signal``."""

    def __init__(
        self,
        link: _Link,
        token: str,
        on_signal: Callable[[str], None],
        on_reconnect: Callable[[], None],
    ) -> None:
        self._link = link
        self._own = token
        self._on_signal = on_signal
        self._on_reconnect = on_reconnect
        self.listening = threading.Event()
        # close() writes to it, so that select returns at once rather than after _POLL_S.
        self._wake_in, self._wake_out = socket.socketpair()

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_out.send(b"\0")

    def dispose(self) -> None:
        """Free the wake-up sockets, once the thread no longer selects on them."""
        self._wake_in.close()
        self._wake_out.close()

    def run(self) -> None:
        while (opened := self._link.open()) is not None:
            conn, channel = opened
            try:
                self._listen_until_stopped(conn, channel)
            except (psycopg2.Error, OSError) as exc:
                self._link.lost(exc)
            finally:
                self.listening.clear()
                _close(conn)

    def _listen_until_stopped(self, conn: Any, channel: str) -> None:
        with conn.cursor() as cursor:
            cursor.execute(f"LISTEN {channel}")  # a fixed prefix and hex digits: no quoting
            self.listening.set()
            if self._link.attempts > 1:  # not listening since start: signals may be lost
                self._call(self._on_reconnect)
            heard = time.monotonic()
            while not self._link.stopped:
                ready, _, _ = select.select([conn, self._wake_in], [], [], _POLL_S)
                if conn in ready:
                    conn.poll()
                    heard = time.monotonic()
                elif time.monotonic() - heard >= _IDLE_CHECK_S:
                    # A silent connection may be a dead one: a round trip tells.
                    cursor.execute("SELECT 1")
                    heard = time.monotonic()
                self._deliver(conn)

    def _deliver(self, conn: Any) -> None:
        while conn.notifies:
            payload = conn.notifies.pop(0).payload
            sender, separated, key = payload.partition(" ")
            if separated and sender == self._own:
                continue
            self._call(self._on_signal, key if separated else payload)

    @staticmethod
    def _call(callback: Callable[..., None], *args: str) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("signals: %s failed", getattr(callback, "__name__", callback))
