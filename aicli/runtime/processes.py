"""The Claude processes that outlive their run: found by their mark, ended by the next run.

Every process a node starts carries ``owner_prefix`` and the node's id in its
environment (and, when the store records it, its pid and start time), so a
later run on the same database can tell a dead run's leftovers from a live
node's processes, on this machine or a peer's.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

import psutil

from aicli.actors import process_tree
from aicli.errors import StorageError, Unavailable
from aicli.storage import Store

log = logging.getLogger(__name__)


def owner_prefix(database_url: str) -> str:
    """A mark shared by every run on one database, so a new run can find an old one's children."""
    return f"aicli-{hashlib.sha256(database_url.encode()).hexdigest()[:12]}/"


class Reaper:
    def __init__(self, store: Store, prefix: str) -> None:
        self._store = store
        self._prefix = prefix
        self._nodes_seen: set[str] = set()  # the live nodes at the last look
        self._reaping = threading.Lock()

    def reap(self) -> int:
        """End processes that dead runs on this database left behind (after a crash).

        A process counts as a leftover only if its environment carries this
        database's mark with the id of a node whose lease has ended; a live node's
        (this one's, or a peer's on this machine) are spared. A process recorded by
        pid must also have the recorded start time, so a reused pid is never hit, and
        any process must be older than the look at the live nodes.
        """
        read_at = time.time()  # a node that joins after this read is live, even if unlisted
        live = {node.id for node in self._store.nodes.live()}
        self._nodes_seen = live

        def dead_run(mark: str | None) -> bool:
            if not mark or not mark.startswith(self._prefix):
                return False
            return mark[len(self._prefix) :].split("/", 1)[0] not in live

        leftovers = {
            p.pid: p
            for p in process_tree.marked_processes(self._prefix, prefix=True)
            if dead_run(process_tree.mark_of(p.pid)) and _started_before(p, read_at)
        }
        for pid, start_time, owner, _ in self._store.recorded_processes():
            if not dead_run(owner) or start_time >= read_at:
                continue
            process = _recorded_process(pid, start_time)
            if process is not None and dead_run(process_tree.mark_of(pid)):
                leftovers[pid] = process
            self._store.forget_process(pid, start_time)
        if leftovers:
            log.warning("ending %d processes left by an earlier run", len(leftovers))
            process_tree.kill_all(leftovers.values())
        return len(leftovers)

    def look_for_dead_nodes(self) -> None:
        """Reap (in the background) if a node listed live at the last look is gone now."""
        live = {n.id for n in self._store.nodes.live()}
        if self._nodes_seen - live:
            self._reap_in_background()
        self._nodes_seen = live

    def _reap_in_background(self) -> None:
        """Killing waits for the processes to die: not on the lease's thread, which must
        renew in time. One reaper at a time; a death it misses, the next one sees."""
        if self._reaping.acquire(blocking=False):

            def reap() -> None:
                try:
                    self.reap()
                except (StorageError, Unavailable) as exc:
                    log.warning("could not end dead nodes' processes: %s", exc)
                finally:
                    self._reaping.release()

            threading.Thread(target=reap, name="aicli-reaper", daemon=True).start()

    def kill_own(self, node_ids: list[str]) -> None:
        """End whatever the session actors' own cleanup missed, of every node this run was."""
        for node_id in node_ids:
            mark = f"{self._prefix}{node_id}/"
            process_tree.kill_all(process_tree.marked_processes(mark, prefix=True))


def _started_before(process: psutil.Process, moment: float) -> bool:
    try:
        return process.create_time() < moment
    except psutil.NoSuchProcess:
        return False


def _recorded_process(pid: int, start_time: float) -> psutil.Process | None:
    try:
        process = psutil.Process(pid)
        return process if abs(process.create_time() - start_time) < 0.01 else None
    except psutil.NoSuchProcess:
        return None
