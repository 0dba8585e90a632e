"""The tables as the current schema version has them (see ``migrations`` for how they got so).

Model classes are built per database rather than bound globally, so that two
stores (a test on SQLite and one on PostgreSQL, or an old and a new file during
an upgrade) never share Peewee's class-level database binding.

Indexes follow the list queries: every keyset page is one range scan of an
index ending in ``(created_at, id)``, after equality on the filtered columns.
"""

from __future__ import annotations

from typing import NamedTuple

from peewee import (
    SQL,
    BigAutoField,
    BigIntegerField,
    BlobField,
    BooleanField,
    CharField,
    Check,
    Database,
    DoubleField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from aicli.contract import ApprovalKind, ApprovalStatus, SessionStatus, TaskStatus
from aicli.storage.fields import JsonTextField, UtcDateTimeField


def count_column(status: str) -> str:
    """The ``sessions`` column counting the session's tasks in ``status``."""
    return f"n_{status}"


def status_check(statuses: tuple[str, ...]) -> Check:
    return Check(f"status IN ({', '.join(repr(status) for status in statuses)})")


class Tables(NamedTuple):
    sessions: type[Model]
    tasks: type[Model]
    events: type[Model]
    processes: type[Model]
    principals: type[Model]
    approvals: type[Model]
    nodes: type[Model]
    transcript_chunks: type[Model]


def bind_tables(db: Database) -> Tables:
    class Base(Model):
        class Meta:
            database = db

    class SessionRow(Base):
        id = CharField(max_length=64, primary_key=True)
        status = CharField(max_length=16, constraints=[status_check(tuple(SessionStatus))])
        workdir = TextField()
        model = TextField(null=True)
        permission_mode = CharField(max_length=32, null=True)
        allowed_tools = JsonTextField()
        disallowed_tools = JsonTextField()
        append_system_prompt = TextField(null=True)
        max_turns = IntegerField(null=True)
        metadata = JsonTextField()
        claude_session_id = TextField(null=True)
        created_at = UtcDateTimeField()
        updated_at = UtcDateTimeField()
        last_active_at = UtcDateTimeField(null=True)
        # Kept by the store in the transaction that changes a task, so that reading
        # a session never aggregates its tasks.
        n_pending = IntegerField(constraints=[SQL("DEFAULT 0")])
        n_running = IntegerField(constraints=[SQL("DEFAULT 0")])
        n_completed = IntegerField(constraints=[SQL("DEFAULT 0")])
        n_failed = IntegerField(constraints=[SQL("DEFAULT 0")])
        n_cancelled = IntegerField(constraints=[SQL("DEFAULT 0")])
        total_cost_usd = DoubleField(constraints=[SQL("DEFAULT 0")])
        # Added by migration 3: the seq the session's newest task took.
        last_seq = BigIntegerField(constraints=[SQL("DEFAULT 0")])
        # Added by migration 4: the principal that opened it (null before principals).
        owner = CharField(max_length=64, null=True)
        # Added by migration 5.
        approvals = CharField(max_length=8, constraints=[SQL("DEFAULT 'off'")])
        approval_timeout_s = DoubleField(constraints=[SQL("DEFAULT 3600")])
        approval_rules = JsonTextField(constraints=[SQL("DEFAULT '[]'")])
        # Added by migration 7: the node running it now, and how many claims it has seen.
        owner_node = CharField(max_length=64, null=True)
        owner_epoch = BigIntegerField(constraints=[SQL("DEFAULT 0")])
        # Added by migration 10: the characters of text stored for it (``usage``).
        stored_bytes = BigIntegerField(constraints=[SQL("DEFAULT 0")])

        class Meta:
            table_name = "sessions"
            indexes = (
                (("created_at", "id"), False),
                (("status", "created_at", "id"), False),
                (("owner", "created_at", "id"), False),
            )

    class TaskRow(Base):
        id = CharField(max_length=64, primary_key=True)
        session = ForeignKeyField(SessionRow, column_name="session_id", backref="+", index=False)
        command = TextField()
        status = CharField(max_length=16, constraints=[status_check(tuple(TaskStatus))])
        output = TextField(null=True)
        error = TextField(null=True)
        created_at = UtcDateTimeField()
        started_at = UtcDateTimeField(null=True)
        completed_at = UtcDateTimeField(null=True)
        timeout_s = DoubleField(null=True)
        cost_usd = DoubleField(null=True)
        num_turns = IntegerField(null=True)
        duration_ms = BigIntegerField(null=True)
        usage = JsonTextField(null=True)
        metadata = JsonTextField()
        idempotency_key = TextField(null=True)
        # Added by migration 2; the store sets it on every write.
        updated_at = UtcDateTimeField(null=True)
        # Added by migration 3: the task's place in its session's queue.
        seq = BigIntegerField(null=True)
        # Added by migration 5: the approval its turn waits for, while one does.
        awaiting_approval = CharField(max_length=64, null=True)
        # Added by migration 8: the request its idempotency key was first used with.
        idempotency_fingerprint = CharField(max_length=64, null=True)

        class Meta:
            table_name = "tasks"
            indexes = (
                (("created_at", "id"), False),
                (("session_id", "created_at", "id"), False),
                (("status", "created_at", "id"), False),
                (("session_id", "status", "created_at", "id"), False),
                (("session_id", "idempotency_key"), True),
                (("session_id", "seq"), True),
                (("session_id", "status", "seq"), False),
            )

    class EventRow(Base):
        id = BigAutoField()
        task = ForeignKeyField(TaskRow, column_name="task_id", backref="+", index=False)
        seq = IntegerField()
        type = CharField(max_length=64)
        created_at = UtcDateTimeField()
        data = JsonTextField()

        class Meta:
            table_name = "task_events"
            indexes = ((("task_id", "seq"), True),)

    class PrincipalRow(Base):
        """Added by migration 4. Only a token's SHA-256 is kept, never the token."""

        id = CharField(max_length=64, primary_key=True)
        name = TextField()
        role = CharField(max_length=16, constraints=[Check("role IN ('admin', 'user')")])
        token_hash = CharField(max_length=64, unique=True)
        workspace_root = TextField(null=True)
        max_sessions = IntegerField(null=True)
        max_pending_per_session = IntegerField(null=True)
        budget_usd = DoubleField(null=True)
        created_at = UtcDateTimeField()
        revoked_at = UtcDateTimeField(null=True)
        # Added by migration 10.
        max_stored_bytes = BigIntegerField(null=True)

        class Meta:
            table_name = "principals"
            indexes = ((("created_at", "id"), False),)

    class ApprovalRow(Base):
        """Added by migration 5: a tool use or a question that waited for a person."""

        id = CharField(max_length=64, primary_key=True)
        session = ForeignKeyField(SessionRow, column_name="session_id", backref="+", index=False)
        task = ForeignKeyField(TaskRow, column_name="task_id", backref="+", index=False)
        kind = CharField(
            max_length=16,
            constraints=[Check(f"kind IN ({', '.join(repr(str(k)) for k in ApprovalKind)})")],
        )
        tool_name = TextField()
        input = JsonTextField()
        suggestions = JsonTextField()
        status = CharField(max_length=16, constraints=[status_check(tuple(ApprovalStatus))])
        message = TextField(null=True)
        created_at = UtcDateTimeField()
        decided_at = UtcDateTimeField(null=True)
        decided_by = CharField(max_length=64, null=True)

        class Meta:
            table_name = "approvals"
            indexes = (
                (("created_at", "id"), False),
                (("session_id", "created_at", "id"), False),
                (("task_id", "status"), False),
                (("status", "created_at", "id"), False),
            )

    class NodeRow(Base):
        """Added by migration 6: one running server, while its lease lasts."""

        id = CharField(max_length=64, primary_key=True)
        url = TextField(null=True)
        started_at = UtcDateTimeField()
        expires_at = UtcDateTimeField()
        sessions = IntegerField(constraints=[SQL("DEFAULT 0")])
        live_processes = IntegerField(constraints=[SQL("DEFAULT 0")])
        sandboxed = BooleanField(constraints=[SQL("DEFAULT FALSE")])  # migration 11

        class Meta:
            table_name = "nodes"
            indexes = ((("expires_at",), False),)

    class TranscriptChunkRow(Base):
        """Added by migration 7: a piece of a session's CLI transcript, from ``offset`` on."""

        id = BigAutoField()
        session = ForeignKeyField(SessionRow, column_name="session_id", backref="+", index=False)
        claude_session_id = TextField()
        offset = BigIntegerField()
        data = BlobField()

        class Meta:
            table_name = "transcript_chunks"
            indexes = ((("session_id", "claude_session_id", "offset"), True),)

    class ProcessRow(Base):
        pid = IntegerField()
        start_time = DoubleField()
        owner = TextField()
        kind = TextField()
        created_at = UtcDateTimeField()
        session_id = CharField(max_length=64, null=True)  # added by migration 9
        node_id = CharField(max_length=64, null=True)

        class Meta:
            table_name = "processes"
            indexes = ((("pid", "start_time"), False), (("session_id",), False))

    return Tables(
        SessionRow,
        TaskRow,
        EventRow,
        ProcessRow,
        PrincipalRow,
        ApprovalRow,
        NodeRow,
        TranscriptChunkRow,
    )
