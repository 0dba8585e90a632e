"""Which node runs each session: one claim at a time, each with a higher epoch.

A node claims a session before it starts the session's Claude process, and
only from nobody, from itself, or from a node whose lease ran out (the
database's clock decides, as for leases). Each claim raises the session's
``owner_epoch``; every write the claimant then makes for the session names
its epoch (``Store.start_next_task``, ``append_events``, ``finish_task``), so
that the writes of a claim taken over since match no row. A node lets go of a
session when it passivates or stops, so peers can claim it at once.

Rescue takes sessions from nodes whose lease ran out (they died, or were cut
off and fenced themselves): a task running there fails once, naming the node,
and the session is left unclaimed, its pending tasks waiting for the next
claim. Rows locked by another rescuer are skipped, so nodes rescuing at once
share the work instead of queueing on it. Reached as ``Store.ownership``.
"""

from __future__ import annotations

from aicli.contract import SessionStatus, TaskStatus
from aicli.errors import SessionNotFound
from aicli.storage.engine import Engine
from aicli.storage.nodes import db_now
from aicli.storage.task_outcomes import TaskOutcomes

RESCUE_BATCH = 100


def lost_node_error(node_id: str | None) -> str:
    """Why a task fails when its node is gone: it may have acted, so it is not run again."""
    which = (
        "" if node_id is None else f" (node {node_id}, which ran it, stopped or lost the database)"
    )
    return (
        f"The server stopped while this task was running{which}; it was not run again because"
        " Claude may already have changed files."
    )


class Ownership:
    def __init__(self, engine: Engine, outcomes: TaskOutcomes) -> None:
        """``outcomes``: how a session taken from a dead node fails its running task."""
        self._engine = engine
        self._execute = engine.execute
        self._outcomes = outcomes
        postgres = engine.is_postgres
        now = db_now(postgres)
        live = f"SELECT 1 FROM nodes WHERE nodes.id = {{}} AND nodes.expires_at > {now}"
        lock = " FOR UPDATE" if postgres else ""
        self._look = (
            "SELECT status, owner_node, EXISTS"
            f" ({live.format('sessions.owner_node')}), EXISTS ({live.format('?')})"
            f" FROM sessions WHERE id = ?{lock}"
        )
        self._orphans = (
            "SELECT id, owner_node FROM sessions WHERE (owner_node IS NOT NULL AND owner_node <> ?"
            f" AND NOT EXISTS ({live.format('sessions.owner_node')})) OR (owner_node IS NULL"
            f" AND id IN (SELECT session_id FROM tasks WHERE status = '{TaskStatus.RUNNING}'))"
            f" ORDER BY id LIMIT ?{' FOR UPDATE SKIP LOCKED' if postgres else ''}"
        )
        self._forget_dead = (
            f"DELETE FROM nodes WHERE expires_at <= {now}"
            " AND NOT EXISTS (SELECT 1 FROM sessions WHERE sessions.owner_node = nodes.id)"
        )

    def claim(self, session_id: str, node_id: str) -> int | None:
        """The session for ``node_id`` (whose lease must last): the claim's epoch, or None
        while another live node holds it or the session is closed.

        Taken from a dead node, the session's running task fails first, in this commit.
        """

        def write() -> int | None:
            row = self._execute(self._look, (node_id, session_id)).fetchone()
            if row is None:
                raise SessionNotFound(session_id)
            status, owner, owner_live, self_live = row
            if status == SessionStatus.CLOSED or not self_live:
                return None
            if owner is not None and owner != node_id and owner_live:
                return None
            if owner is not None and owner != node_id:
                self._outcomes.fail_running_within(session_id, lost_node_error(owner))
            sql = (
                "UPDATE sessions SET owner_node = ?, owner_epoch = owner_epoch + 1"
                " WHERE id = ? RETURNING owner_epoch"
            )
            return int(self._execute(sql, (node_id, session_id)).fetchone()[0])

        return self._engine.write(write)

    def release(self, session_id: str, node_id: str, epoch: int) -> bool:
        """Let go of the session, unless a later claim holds it already; whether it did."""
        sql = (
            "UPDATE sessions SET owner_node = NULL"
            " WHERE id = ? AND owner_node = ? AND owner_epoch = ? RETURNING id"
        )
        params = (session_id, node_id, epoch)
        return self._engine.write(lambda: self._execute(sql, params).fetchone() is not None)

    def rescue(self, me: str | None) -> list[str]:
        """Take sessions from dead nodes (and fail tasks running with no claim at all).

        Their running tasks fail, naming the node; the sessions stay unclaimed. Node
        rows whose lease ran out and that hold no session go too. Returns the ids of
        the sessions rescued (at most ``RESCUE_BATCH`` a call; call again for more).
        """

        def write() -> list[str]:
            rows = self._execute(self._orphans, (me or "", RESCUE_BATCH)).fetchall()
            for session_id, owner in rows:
                error = lost_node_error(owner)
                self._outcomes.fail_running_within(session_id, error)
                self._execute(
                    "UPDATE sessions SET owner_node = NULL, owner_epoch = owner_epoch + 1"
                    " WHERE id = ?",
                    (session_id,),
                )
            self._execute(self._forget_dead)
            return [session_id for session_id, _ in rows]

        return self._engine.write(write)

    def unclaimed_with_pending(self) -> list[str]:
        """Sessions with work waiting and no claim: what a node with room may claim."""
        sql = (
            "SELECT DISTINCT tasks.session_id FROM tasks JOIN sessions"
            " ON sessions.id = tasks.session_id"
            f" WHERE tasks.status = '{TaskStatus.PENDING}' AND sessions.owner_node IS NULL"
            " ORDER BY tasks.session_id"
        )
        return self._engine.read(lambda: [row[0] for row in self._execute(sql).fetchall()])

    def held_with_pending(self, node_id: str) -> list[str]:
        """Sessions ``node_id`` holds that have work waiting (a wake may have been lost)."""
        sql = (
            "SELECT DISTINCT tasks.session_id FROM tasks JOIN sessions"
            " ON sessions.id = tasks.session_id"
            f" WHERE tasks.status = '{TaskStatus.PENDING}' AND sessions.owner_node = ?"
            " ORDER BY tasks.session_id"
        )
        return self._engine.read(lambda: [row[0] for row in self._execute(sql, (node_id,))])

    def closed_held(self, node_id: str) -> list[str]:
        """Sessions closed while ``node_id`` held them: their actors there must end the
        running task (a peer's word of the close may have been lost)."""
        sql = f"SELECT id FROM sessions WHERE owner_node = ? AND status = '{SessionStatus.CLOSED}'"
        return self._engine.read(lambda: [row[0] for row in self._execute(sql, (node_id,))])

    def owner_live(self, session_id: str, node_id: str) -> bool:
        """Whether a node other than ``node_id`` holds the session under a lasting lease."""
        now = db_now(self._engine.is_postgres)
        sql = (
            "SELECT 1 FROM sessions JOIN nodes ON nodes.id = sessions.owner_node"
            f" WHERE sessions.id = ? AND nodes.id <> ? AND nodes.expires_at > {now}"
        )
        return self._engine.read(
            lambda: self._execute(sql, (session_id, node_id)).fetchone() is not None
        )

    def with_live_process(self, session_ids: list[str]) -> set[str]:
        """Which of ``session_ids`` have a live Claude process: one recorded by a node whose
        lease lasts (a dead node's rows stay until a reaper forgets them). The same answer
        on every node."""
        if not session_ids:
            return set()
        now = db_now(self._engine.is_postgres)
        marks = ", ".join("?" * len(session_ids))
        sql = (
            "SELECT DISTINCT processes.session_id FROM processes JOIN nodes"
            f" ON nodes.id = processes.node_id WHERE processes.session_id IN ({marks})"
            f" AND nodes.expires_at > {now}"
        )
        return self._engine.read(
            lambda: {row[0] for row in self._execute(sql, list(session_ids)).fetchall()}
        )

    def forget_other_nodes(self, me: str) -> int:
        """SQLite, one server per file: every other node row is a dead run's; how many."""
        sql = "DELETE FROM nodes WHERE id <> ? RETURNING id"
        return self._engine.write(lambda: len(self._execute(sql, (me,)).fetchall()))
