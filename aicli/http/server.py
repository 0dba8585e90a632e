"""Waitress around the app, with a stop that works from a signal handler or another thread.

Waitress's own ``run`` only ends on an exception; we drive its event loop
ourselves so that shutdown can happen in steps: stop accepting connections,
keep flushing the responses in flight while the runtime winds down, then close.

The loop uses ``poll``: ``select`` (Waitress's default) fails outright once a
socket's descriptor passes 1023, which a thousand connections reach.
(``create_server``'s ``asyncore_use_poll`` only reaches Waitress's own ``run``.)
"""

from __future__ import annotations

import logging
import resource
import threading
from collections.abc import Callable
from typing import Any

from waitress import create_server, wasyncore
from waitress.server import BaseWSGIServer

from aicli.http.dispatcher import GrowingDispatcher
from aicli.settings import Settings

log = logging.getLogger(__name__)

LOOP_TIMEOUT_S = 0.25
DISPATCHER_SHUTDOWN_S = 5.0
# Waitress looks for timed-out connections at most this often (its own default).
CLEANUP_INTERVAL_S = 30
# Descriptors beyond the connections: listeners, the database, Claude processes' pipes, logs.
FD_HEADROOM = 256


class Server:
    def __init__(
        self,
        app: Any,
        *,
        host: str,
        port: int,
        threads: int,
        max_streams: int = Settings.max_streams,
        connection_limit: int = Settings.connection_limit,
        channel_timeout: int = Settings.channel_timeout,
    ) -> None:
        self._map: dict[int, Any] = {}
        self._stop = threading.Event()
        self._waitress = create_server(
            app,
            map=self._map,
            # Waitress's hook for a dispatcher of one's own (it starts ``threads`` otherwise).
            _dispatcher=GrowingDispatcher(threads, threads + max_streams),
            host=host,
            port=port,
            ident="aicli",
            # Read ahead on busy connections so a client that hangs up on an
            # event stream is noticed (waitress.client_disconnected) at once.
            channel_request_lookahead=1,
            clear_untrusted_proxy_headers=True,
            connection_limit=connection_limit,
            channel_timeout=channel_timeout,
            # A short timeout is only kept if the sweep runs at least that often.
            cleanup_interval=max(1, min(channel_timeout, CLEANUP_INTERVAL_S)),
        )
        first = self._listeners()[0]
        self.host, self.port = first.effective_host, first.effective_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}"

    def _listeners(self) -> list[BaseWSGIServer]:
        return [item for item in self._map.values() if isinstance(item, BaseWSGIServer)]

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Serve until ``request_stop`` (or until ``until()`` is true)."""
        while self._map and not self._stop.is_set() and not (until and until()):
            wasyncore.loop(timeout=LOOP_TIMEOUT_S, map=self._map, use_poll=True, count=1)

    def request_stop(self) -> None:
        """Safe from a signal handler: only sets a flag the loop checks every 0.25 s."""
        self._stop.set()

    def stop_accepting(self) -> None:
        for listener in self._listeners():
            listener.close()

    def close(self) -> None:
        """Close every connection and stop the worker threads (daemons, waited on briefly)."""
        self.stop_accepting()
        wasyncore.close_all(self._map)
        self._waitress.task_dispatcher.shutdown(timeout=DISPATCHER_SHUTDOWN_S)

    def drain(self, while_running: Callable[[], bool]) -> None:
        """Keep flushing responses in flight while ``while_running()``; new connections refused."""
        self._stop.clear()
        self.stop_accepting()
        self.run(until=lambda: not while_running())


def raise_open_file_limit(connections: int) -> None:
    """Raise the soft open-file limit so that ``connections`` sockets fit, if the hard one allows.

    Each connection is a descriptor, and systems commonly start processes with a
    soft limit of 1024 under a much higher hard one. It is raised only as far as
    needed because children (Claude and the tools it runs) inherit it, and some
    programs walk every possible descriptor.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + FD_HEADROOM
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as ex:
            log.warning("could not raise the open-file limit to %d: %s", wanted, ex)
    if soft != resource.RLIM_INFINITY and soft < connections + FD_HEADROOM:
        log.warning(
            "the open-file limit (%d) is too low for connection_limit %d; "
            "connections past it may fail",
            soft,
            connections,
        )
