"""The watchdog: a small process of the node's own that ends its Claude processes when
the node's lease deadline passes, whether or not the server process is scheduled.

The fence (``fencer``) runs inside the server. A server that is not scheduled
(stopped with SIGSTOP, swapped out, stuck in the kernel) cannot act on its own
deadline, while the CLIs and their tools, processes of their own, go on working
in the session's workdir; a peer then takes the session over once the lease ran
out by the database's clock, and the session would run two things at once. So
the deadline is also held here, in a process that only reads its input, sleeps
and kills: ``python -m aicli.actors.watchdog <mark prefix>``, started by the
fencer and fed by it, one line at a time on its stdin:

``arm <node id> <deadline>``
    the node holds its lease until ``deadline``, in seconds of ``CLOCK_MONOTONIC``
    (one clock for every process of the machine), before its lease can end by
    the database's clock;
``fenced <node id>``
    the server has stopped acting for that id (nothing more starts under it):
    end what is left of it now, and forget it.

When a deadline passes unrenewed, every process carrying that node's mark is
killed, and again every ``SWEEP_S`` until the server says ``fenced`` (a server
that wakes up may start one more before it hears of the fence). An ``arm`` for
an id whose deadline passed is ignored: that lease is over for good. End of
input (the server stopped or died) ends the processes of every id heard; then
the watchdog exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time

from aicli.actors import process_tree

log = logging.getLogger(__name__)

SWEEP_S = 0.25
KILL_ROUNDS = 5


def end_node(prefix: str, node_id: str) -> int:
    """Kill every process marked as ``node_id``'s, again while new ones show up (a tool
    that forked while the others died); how many."""
    ended = 0
    for _ in range(KILL_ROUNDS):
        found = process_tree.marked_processes(f"{prefix}{node_id}/", prefix=True)
        if not found:
            break
        process_tree.kill_all(found, timeout=1.0)
        ended += len(found)
    return ended


class Watch:
    """The watchdog's state: what it read, and what is due (no I/O but the kills)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.deadlines: dict[str, float] = {}
        self.expired: set[str] = set()  # past their deadline, swept until fenced
        self.heard: set[str] = set()

    def read(self, line: str) -> None:
        words = line.split()
        if len(words) == 3 and words[0] == "arm":
            node_id = words[1]
            self.heard.add(node_id)
            if node_id not in self.expired:
                self.deadlines[node_id] = float(words[2])
        elif len(words) == 2 and words[0] == "fenced":
            node_id = words[1]
            self.heard.add(node_id)
            self.deadlines.pop(node_id, None)
            self.expired.discard(node_id)
            end_node(self.prefix, node_id)
        elif words:
            log.warning("watchdog: ignored %.100r", line)

    def due(self, now: float) -> None:
        """End the nodes whose deadline passed, and sweep those still unfenced."""
        for node_id in [n for n, at in self.deadlines.items() if at <= now]:
            del self.deadlines[node_id]
            self.expired.add(node_id)
            ended = end_node(self.prefix, node_id)
            log.warning(
                "watchdog: node %s's lease deadline passed unrenewed: ended %d processes",
                node_id,
                ended,
            )
        for node_id in self.expired:
            end_node(self.prefix, node_id)

    def wait(self, now: float) -> float | None:
        """How long the next read may wait (None: until input comes)."""
        waits = [at - now for at in self.deadlines.values()]
        if self.expired:
            waits.append(SWEEP_S)
        return max(0.0, min(waits)) if waits else None

    def end(self) -> None:
        for node_id in sorted(self.heard):
            end_node(self.prefix, node_id)


def run(prefix: str, source: int) -> None:
    """Watch until ``source`` (a file descriptor) ends."""
    watch = Watch(prefix)
    pending = b""
    while True:
        watch.due(time.monotonic())
        readable, _, _ = select.select([source], [], [], watch.wait(time.monotonic()))
        if not readable:
            continue
        chunk = os.read(source, 65536)
        if not chunk:
            watch.end()
            return
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            try:
                watch.read(line.decode())
            except ValueError:
                log.warning("watchdog: ignored %.100r", line)


class WatchdogProcess:
    """The server's end: starts the watchdog and writes its lines (a line is a few dozen
    bytes and the pipe holds thousands, so a write does not wait for the watchdog)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._popen: subprocess.Popen[bytes] | None = None
        self._armed: str | None = None  # the last ``arm`` line, for a watchdog started anew

    def start(self) -> None:
        # In the server's process group: a stop or kill of the group reaches it too.
        self._popen = subprocess.Popen(
            [sys.executable, "-m", "aicli.actors.watchdog", self.prefix], stdin=subprocess.PIPE
        )
        if self._armed is not None:
            self._send(self._armed)

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    def arm(self, node_id: str, deadline: float) -> None:
        self._armed = f"arm {node_id} {deadline!r}\n"
        self._write(self._armed)

    def fenced(self, node_id: str) -> None:
        self._armed = None
        self._write(f"fenced {node_id}\n")

    def close(self, timeout: float = 10.0) -> None:
        """End of input: the watchdog ends what is left of the node and exits."""
        popen, self._popen = self._popen, None
        if popen is None:
            return
        with contextlib.suppress(OSError):
            if popen.stdin is not None:
                popen.stdin.close()
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()

    def _write(self, line: str) -> None:
        """Send a line; a watchdog that died is started again, and told (it should not die)."""
        if self._send(line):
            return
        log.error("the watchdog is gone (%s); starting another", _exit_of(self._popen))
        self.start()
        if not line.startswith("arm "):  # start() armed it already
            self._send(line)

    def _send(self, line: str) -> bool:
        popen = self._popen
        if popen is None or popen.stdin is None or popen.poll() is not None:
            return False
        try:
            popen.stdin.write(line.encode())
            popen.stdin.flush()
        except OSError:
            return False
        return True


def _exit_of(popen: subprocess.Popen[bytes] | None) -> str:
    return "never started" if popen is None else f"exit code {popen.poll()}"


def main(argv: list[str]) -> int:
    # Ctrl-C in a terminal and a service manager's SIGTERM reach the whole group: the
    # server then stops, and its end of the pipe closing is what ends the watchdog.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s watchdog[%(process)d] %(message)s"
    )
    if len(argv) != 1:
        print("usage: python -m aicli.actors.watchdog <mark prefix>", file=sys.stderr)
        return 2
    run(argv[0], sys.stdin.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
