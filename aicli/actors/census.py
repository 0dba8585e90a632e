"""Which sessions have a live Claude process, readable from any thread.

Session actors write it as their processes start and end; the metrics, the
lease's count and the shutdown read its size. (``process_alive`` is read from the
store, so that every node gives the same answer: ``Ownership.with_live_process``.)
It is a fact about the machine, not a decision, so no actor needs to be asked for it.
"""

from __future__ import annotations

import threading

CENSUS_KEY = "census"  # the notifier key announced whenever a process ends


class ProcessCensus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: set[str] = set()

    def add(self, session_id: str) -> None:
        with self._lock:
            self._sessions.add(session_id)

    def discard(self, session_id: str) -> None:
        with self._lock:
            self._sessions.discard(session_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
