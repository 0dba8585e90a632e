"""Schema versions, applied in order and recorded in ``schema_migrations``.

A migration is never edited once released: it describes the database that
release created, which is why migration 1 declares its own copy of the first
tables instead of using ``schema``. A later release appends a migration; opening
an older database applies the missing ones, each in its own transaction together
with its row in ``schema_migrations`` (DDL is transactional on both backends),
so a failed upgrade leaves the previous version intact.

Two processes starting at once are serialised: SQLite by ``BEGIN IMMEDIATE``,
PostgreSQL by a transaction-scoped advisory lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from peewee import (
    SQL,
    BigAutoField,
    BigIntegerField,
    BlobField,
    CharField,
    Check,
    Database,
    DoubleField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)
from playhouse.migrate import SchemaMigrator

from aicli.contract import utcnow
from aicli.errors import StorageError
from aicli.storage.engine import Engine
from aicli.storage.fields import JsonTextField, UtcDateTimeField
from aicli.storage.schema import status_check

# Any constant will do; it keeps aicli's migrations from running twice at once.
_PG_MIGRATION_LOCK = 0x41_49_43_4C_49


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Database], None]


def _migration_table(db: Database) -> type[Model]:
    class SchemaMigration(Model):
        version = IntegerField(primary_key=True)
        name = TextField()
        applied_at = UtcDateTimeField()

        class Meta:
            database = db
            table_name = "schema_migrations"

    return SchemaMigration


def _initial_schema(db: Database) -> None:
    class Base(Model):
        class Meta:
            database = db

    class Session(Base):
        id = CharField(max_length=64, primary_key=True)
        status = CharField(max_length=16, constraints=[status_check(("idle", "busy", "closed"))])
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
        n_pending = IntegerField(constraints=[SQL("DEFAULT 0")])
        n_running = IntegerField(constraints=[SQL("DEFAULT 0")])
        n_completed = IntegerField(constraints=[SQL("DEFAULT 0")])
        n_failed = IntegerField(constraints=[SQL("DEFAULT 0")])
        n_cancelled = IntegerField(constraints=[SQL("DEFAULT 0")])
        total_cost_usd = DoubleField(constraints=[SQL("DEFAULT 0")])

        class Meta:
            table_name = "sessions"
            indexes = (
                (("created_at", "id"), False),
                (("status", "created_at", "id"), False),
            )

    class Task(Base):
        id = CharField(max_length=64, primary_key=True)
        session = ForeignKeyField(Session, column_name="session_id", backref="+", index=False)
        command = TextField()
        status = CharField(
            max_length=16,
            constraints=[status_check(("pending", "running", "completed", "failed", "cancelled"))],
        )
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

        class Meta:
            table_name = "tasks"
            indexes = (
                (("created_at", "id"), False),
                (("session_id", "created_at", "id"), False),
                (("status", "created_at", "id"), False),
                (("session_id", "status", "created_at", "id"), False),
                (("session_id", "idempotency_key"), True),
            )

    class TaskEvent(Base):
        id = BigAutoField()
        task = ForeignKeyField(Task, column_name="task_id", backref="+", index=False)
        seq = IntegerField()
        type = CharField(max_length=64)
        created_at = UtcDateTimeField()
        data = JsonTextField()

        class Meta:
            table_name = "task_events"
            indexes = ((("task_id", "seq"), True),)

    class Process(Base):
        pid = IntegerField()
        start_time = DoubleField()
        owner = TextField()
        kind = TextField()
        created_at = UtcDateTimeField()

        class Meta:
            table_name = "processes"
            indexes = ((("pid", "start_time"), False),)

    db.create_tables([Session, Task, TaskEvent, Process])


def _task_updated_at(db: Database) -> None:
    """When a task last changed, for operators and for "what changed since" queries."""
    migrator = SchemaMigrator.from_database(db)
    migrator.add_column("tasks", "updated_at", UtcDateTimeField(null=True)).run()
    db.execute_sql("UPDATE tasks SET updated_at = COALESCE(completed_at, started_at, created_at)")


def _queue_order(db: Database) -> None:
    """Each session's queue order as a number the store hands out, not a clock reading.

    Existing tasks are numbered in the order they were accepted, ``(created_at, id)``.
    """
    migrator = SchemaMigrator.from_database(db)
    migrator.add_column("tasks", "seq", BigIntegerField(null=True)).run()
    # Written out: Peewee adds a NOT NULL column to SQLite by rebuilding the table, and
    # dropping ``sessions`` inside the migration's transaction breaks the tasks' keys.
    db.execute_sql("ALTER TABLE sessions ADD COLUMN last_seq BIGINT NOT NULL DEFAULT 0")
    db.execute_sql(
        "UPDATE tasks SET seq = numbered.n FROM (SELECT id, ROW_NUMBER() OVER"
        " (PARTITION BY session_id ORDER BY created_at, id) AS n FROM tasks) AS numbered"
        " WHERE tasks.id = numbered.id"
    )
    db.execute_sql(
        "UPDATE sessions SET last_seq = COALESCE("
        "(SELECT MAX(seq) FROM tasks WHERE tasks.session_id = sessions.id), 0)"
    )
    db.execute_sql("CREATE UNIQUE INDEX tasks_session_id_seq ON tasks (session_id, seq)")
    db.execute_sql("CREATE INDEX tasks_session_id_status_seq ON tasks (session_id, status, seq)")


def _principals(db: Database) -> None:
    """Principals with their own tokens (kept as hashes), and who opened each session."""

    class Base(Model):
        class Meta:
            database = db

    class Principal(Base):
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

        class Meta:
            table_name = "principals"
            indexes = ((("created_at", "id"), False),)

    db.create_tables([Principal])
    db.execute_sql("ALTER TABLE sessions ADD COLUMN owner VARCHAR(64)")
    db.execute_sql("CREATE INDEX sessions_owner_created_at_id ON sessions (owner, created_at, id)")


def _approvals(db: Database) -> None:
    """Approvals (a person in the loop), each session's approval settings and rules, and the
    approval a running task waits for."""

    class Base(Model):
        class Meta:
            database = db

    class Session(Base):
        id = CharField(max_length=64, primary_key=True)

        class Meta:
            table_name = "sessions"

    class Task(Base):
        id = CharField(max_length=64, primary_key=True)

        class Meta:
            table_name = "tasks"

    class Approval(Base):
        id = CharField(max_length=64, primary_key=True)
        session = ForeignKeyField(Session, column_name="session_id", backref="+", index=False)
        task = ForeignKeyField(Task, column_name="task_id", backref="+", index=False)
        kind = CharField(max_length=16, constraints=[Check("kind IN ('tool', 'question')")])
        tool_name = TextField()
        input = JsonTextField()
        suggestions = JsonTextField()
        status = CharField(
            max_length=16,
            constraints=[status_check(("pending", "allowed", "denied", "expired"))],
        )
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

    db.create_tables([Approval])
    db.execute_sql("ALTER TABLE sessions ADD COLUMN approvals VARCHAR(8) NOT NULL DEFAULT 'off'")
    db.execute_sql(
        "ALTER TABLE sessions ADD COLUMN approval_timeout_s DOUBLE PRECISION NOT NULL DEFAULT 3600"
    )
    db.execute_sql("ALTER TABLE sessions ADD COLUMN approval_rules TEXT NOT NULL DEFAULT '[]'")
    db.execute_sql("ALTER TABLE tasks ADD COLUMN awaiting_approval VARCHAR(64)")


def _nodes(db: Database) -> None:
    """A row per running server (a new id per start), leased by the database's clock."""

    class Node(Model):
        id = CharField(max_length=64, primary_key=True)
        url = TextField(null=True)
        started_at = UtcDateTimeField()
        expires_at = UtcDateTimeField()
        sessions = IntegerField(constraints=[SQL("DEFAULT 0")])
        live_processes = IntegerField(constraints=[SQL("DEFAULT 0")])

        class Meta:
            database = db
            table_name = "nodes"
            indexes = ((("expires_at",), False),)

    db.create_tables([Node])


def _ownership(db: Database) -> None:
    """Which node runs each session (and the epoch of that claim), and the transcripts that
    let a session move between nodes."""

    class Base(Model):
        class Meta:
            database = db

    class Session(Base):
        id = CharField(max_length=64, primary_key=True)

        class Meta:
            table_name = "sessions"

    class TranscriptChunk(Base):
        id = BigAutoField()
        session = ForeignKeyField(Session, column_name="session_id", backref="+", index=False)
        claude_session_id = TextField()
        offset = BigIntegerField()
        data = BlobField()

        class Meta:
            table_name = "transcript_chunks"
            indexes = ((("session_id", "claude_session_id", "offset"), True),)

    db.create_tables([TranscriptChunk])
    db.execute_sql("ALTER TABLE sessions ADD COLUMN owner_node VARCHAR(64)")
    db.execute_sql("ALTER TABLE sessions ADD COLUMN owner_epoch BIGINT NOT NULL DEFAULT 0")
    db.execute_sql("CREATE INDEX sessions_owner_node ON sessions (owner_node)")


def _idempotency_fingerprints(db: Database) -> None:
    """The request an Idempotency-Key was first used with (``storage.idempotency``), and the
    keys indexed alone, as a key is looked for across its owner's sessions."""
    db.execute_sql("ALTER TABLE tasks ADD COLUMN idempotency_fingerprint VARCHAR(64)")
    db.execute_sql(
        "CREATE INDEX tasks_idempotency_key ON tasks (idempotency_key)"
        " WHERE idempotency_key IS NOT NULL"
    )


def _process_sessions(db: Database) -> None:
    """Which session and node each recorded Claude process serves: every node answers
    ``process_alive`` from here (a live process of a node whose lease lasts)."""
    db.execute_sql("ALTER TABLE processes ADD COLUMN session_id VARCHAR(64)")
    db.execute_sql("ALTER TABLE processes ADD COLUMN node_id VARCHAR(64)")
    db.execute_sql("CREATE INDEX processes_session_id ON processes (session_id)")


def _stored_bytes(db: Database) -> None:
    """What each session stores, kept as it is written (prompts, answers, errors, metadata,
    event data: characters of their stored text), and each principal's limit on its sum."""
    db.execute_sql("ALTER TABLE sessions ADD COLUMN stored_bytes BIGINT NOT NULL DEFAULT 0")
    db.execute_sql("ALTER TABLE principals ADD COLUMN max_stored_bytes BIGINT")
    db.execute_sql(
        "UPDATE sessions SET stored_bytes = COALESCE(LENGTH(metadata), 0)"
        " + COALESCE(LENGTH(append_system_prompt), 0)"
        " + COALESCE((SELECT SUM(LENGTH(command) + COALESCE(LENGTH(output), 0)"
        " + COALESCE(LENGTH(error), 0) + COALESCE(LENGTH(metadata), 0))"
        " FROM tasks WHERE tasks.session_id = sessions.id), 0)"
        " + COALESCE((SELECT SUM(LENGTH(data)) FROM task_events"
        " WHERE task_id IN (SELECT id FROM tasks WHERE tasks.session_id = sessions.id)), 0)"
    )


def _node_sandboxed(db: Database) -> None:
    """Whether each node runs its sessions inside the sandbox (``GET /nodes``)."""
    db.execute_sql("ALTER TABLE nodes ADD COLUMN sandboxed BOOLEAN NOT NULL DEFAULT FALSE")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "sessions, tasks, task events, processes", _initial_schema),
    Migration(2, "tasks.updated_at", _task_updated_at),
    Migration(3, "tasks.seq and sessions.last_seq: the queue order", _queue_order),
    Migration(4, "principals and sessions.owner", _principals),
    Migration(5, "approvals, sessions' approval settings and tasks.awaiting_approval", _approvals),
    Migration(6, "nodes and their leases", _nodes),
    Migration(7, "sessions' owner node and epoch; transcript chunks", _ownership),
    Migration(8, "tasks.idempotency_fingerprint and an index of keys", _idempotency_fingerprints),
    Migration(9, "processes' session and node", _process_sessions),
    Migration(10, "sessions.stored_bytes and principals.max_stored_bytes", _stored_bytes),
    Migration(11, "nodes.sandboxed", _node_sandboxed),
)
LATEST_VERSION = MIGRATIONS[-1].version


def applied_versions(engine: Engine) -> list[int]:
    def read() -> list[int]:
        table = _migration_table(engine.db)
        if not table.table_exists():
            return []
        return [row.version for row in table.select(table.version).order_by(table.version)]

    return engine.read(read, snapshot=True)


def migrate(engine: Engine, target: int = LATEST_VERSION) -> int:
    """Bring the database to ``target`` and return the version it is at."""
    for migration in MIGRATIONS:
        if migration.version <= target:
            engine.write(lambda migration=migration: _apply(engine, migration))
    versions = applied_versions(engine)
    current = max(versions, default=0)
    if current > LATEST_VERSION:
        raise StorageError(
            f"The database schema is at version {current}, newer than this aicli knows "
            f"({LATEST_VERSION}); run a newer aicli.",
            {"schema_version": current},
        )
    return current


def _apply(engine: Engine, migration: Migration) -> None:
    db = engine.db
    if engine.is_postgres:
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_PG_MIGRATION_LOCK,))
    table = _migration_table(db)
    table.create_table(safe=True)
    if table.select().where(table.version == migration.version).exists():
        return
    migration.apply(db)
    table.insert(version=migration.version, name=migration.name, applied_at=utcnow()).execute()
