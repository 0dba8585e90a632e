"""Child processes a node started, remembered until they end.

So that a restarted server can find one that outlived it, and every node can tell
that a session's process lives (``Ownership.with_live_process``).
"""

from __future__ import annotations

from aicli.contract import utcnow
from aicli.storage.engine import Engine
from aicli.storage.fields import to_db_time
from aicli.storage.sql import marks

_INSERT = (
    "INSERT INTO processes (pid, start_time, owner, kind, created_at, session_id, node_id)"
    f" VALUES ({marks(7)})"
)
_DELETE = "DELETE FROM processes WHERE pid = ? AND start_time = ?"
_ALL = "SELECT pid, start_time, owner, kind FROM processes ORDER BY id"


class Processes:
    """Reached as ``Store.processes``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._execute = engine.execute

    def record(
        self,
        pid: int,
        start_time: float,
        owner: str,
        kind: str,
        *,
        session_id: str | None = None,
        node_id: str | None = None,
    ) -> None:
        """Remember a child process until ``forget``."""
        params = (pid, start_time, owner, kind, to_db_time(utcnow()), session_id, node_id)
        self._engine.write(lambda: self._execute(_INSERT, params))

    def forget(self, pid: int, start_time: float) -> None:
        self._engine.write(lambda: self._execute(_DELETE, (pid, start_time)))

    def recorded(self) -> list[tuple[int, float, str, str]]:
        """``(pid, start_time, owner, kind)`` of every remembered process, oldest first."""
        return self._engine.read(lambda: [tuple(row) for row in self._execute(_ALL).fetchall()])
