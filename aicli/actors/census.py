"""Which sessions have a live Claude process, readable from any thread.

Session actors write it as their processes start and end; the HTTP layer reads
it for ``process_alive`` and the metrics read its size. It is a fact about the
machine, not a decision, so no actor needs to be asked for it.
"""

from __future__ import annotations

import threading

CENSUS_KEY = "census"  # the notifier key announced whenever a process ends


class ProcessCensus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pids: dict[str, int] = {}

    def add(self, session_id: str, pid: int) -> None:
        with self._lock:
            self._pids[session_id] = pid

    def discard(self, session_id: str) -> None:
        with self._lock:
            self._pids.pop(session_id, None)

    def alive(self, session_id: str) -> bool:
        with self._lock:
            return session_id in self._pids

    def pids(self) -> list[int]:
        with self._lock:
            return list(self._pids.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._pids)
