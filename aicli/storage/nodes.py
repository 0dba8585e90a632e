"""Nodes: a row per running ``aicli serve``, alive while its lease lasts.

A lease is renewed with ``UPDATE ... SET expires_at = now() + ttl WHERE id = ?
AND expires_at > now()``, and every expiry is computed and compared by the
database's clock, never by a host's: two machines' clocks may disagree, the
database's one clock cannot. A lease that ran out is not renewed (the row
matches no more): its node must start over as a new node, since others may
already have taken over its work. Reached as ``Store.nodes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aicli.contract import Node, new_id
from aicli.storage.engine import Engine
from aicli.storage.fields import from_db_time

_COLUMNS = "id, url, started_at, expires_at, sessions, live_processes, sandboxed"


def db_now(is_postgres: bool) -> str:
    """The database's now, in SQL, in the form times are stored in (``fields.to_db_time``)."""
    if is_postgres:
        return "(now() AT TIME ZONE 'UTC')"
    return "strftime('%Y-%m-%d %H:%M:%f000', 'now')"  # microseconds, of which SQLite keeps 3


def node_from_row(row: Sequence[Any]) -> Node:
    node_id, url, started_at, expires_at, sessions, live_processes, sandboxed = row
    return Node(
        id=node_id,
        url=url,
        started_at=from_db_time(started_at),
        expires_at=from_db_time(expires_at),
        sessions=sessions,
        live_processes=live_processes,
        sandboxed=bool(sandboxed),
    )


class Nodes:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._execute = engine.execute
        now = db_now(engine.is_postgres)
        if engine.is_postgres:
            later = f"({now} + ? * INTERVAL '1 second')"
        else:
            later = "strftime('%Y-%m-%d %H:%M:%f000', 'now', '+' || ? || ' seconds')"
        self._join = (
            "INSERT INTO nodes (id, url, sandboxed, started_at, expires_at)"
            f" VALUES (?, ?, ?, {now}, {later})"
            f" RETURNING {_COLUMNS}"
        )
        # SQLite has one server (``server_lock``): no peer takes over from a lease that
        # ran out (a stalled host, a laptop asleep), so it is renewed all the same.
        lasting = f" AND expires_at > {now}" if engine.is_postgres else ""
        self._renew = (
            f"UPDATE nodes SET expires_at = {later}, sessions = ?, live_processes = ?"
            f" WHERE id = ?{lasting} RETURNING {_COLUMNS}"
        )
        self._live = (
            f"SELECT {_COLUMNS} FROM nodes WHERE expires_at > {now} ORDER BY started_at, id"
        )

    def join(self, url: str | None, ttl: float, sandboxed: bool = False) -> Node:
        """A new node with a lease of ``ttl`` seconds from the database's now."""
        node_id = new_id()
        params = (node_id, url, sandboxed, ttl)
        row = self._engine.write(lambda: self._execute(self._join, params).fetchone())
        return node_from_row(row)

    def renew(self, node_id: str, ttl: float, sessions: int, live_processes: int) -> Node | None:
        """The lease for ``ttl`` more seconds; None if it had run out (or the row is gone)."""
        params = (ttl, sessions, live_processes, node_id)
        row = self._engine.write(lambda: self._execute(self._renew, params).fetchone())
        return None if row is None else node_from_row(row)

    def leave(self, node_id: str) -> None:
        """The node stops: its row goes, so that peers need not wait for the lease to end."""
        self._engine.write(lambda: self._execute("DELETE FROM nodes WHERE id = ?", (node_id,)))

    def live(self) -> list[Node]:
        """The nodes whose lease lasts, oldest first."""
        return self._engine.read(lambda: [node_from_row(r) for r in self._execute(self._live)])
