"""The store: the single source of truth for sessions, tasks, their events and child processes.

``Store`` composes one repository per noun, each built on the engine and handed the
other repositories it writes through (an approval tells its task's events; a claim
taken from a dead node fails that node's running task through ``outcomes``):

    events      a task's event log                                   ``events``
    sessions    sessions, their counters and their close             ``sessions``
    tasks       tasks as read                                        ``tasks``
    queue       tasks accepted into a session's queue, and started   ``task_queue``
    outcomes    how a task ends                                      ``task_outcomes``
    processes   child processes remembered until they end            ``processes``
    approvals, principals, credentials, nodes, ownership, transcripts, retention

Every public method is one short transaction (see ``engine`` for the concurrency
story) and returns the frozen structs of ``aicli.contract``, never a row object, so
results can cross threads and actors freely. The hot calls (a handful per task, one
per read request) are SQL written out by hand in the column orders of ``rows``:
building a statement through Peewee's query objects and instantiating its row models
cost several times the database work. Peewee still runs every statement (errors,
hooks, transactions), and keeps the schema and the migrations. Writes use as few
statements as their guarantees allow: a transition is one ``UPDATE ... RETURNING``
plus the counters' ``UPDATE`` (SQLite has ``RETURNING`` since 3.35).

The store's own methods (``create_task``, ``finish_task``, ...) are the repositories'
methods under the names callers have used since before the split; new code may reach
the repositories (``store.tasks.get``) directly.
"""

from __future__ import annotations

from aicli.contract import Principal, Session, Task
from aicli.storage import database, migrations
from aicli.storage.approvals import Approvals
from aicli.storage.credentials import PrincipalCredentials
from aicli.storage.ended import EndedTasks
from aicli.storage.engine import Engine
from aicli.storage.events import Events
from aicli.storage.nodes import Nodes
from aicli.storage.ownership import Ownership
from aicli.storage.principals import Principals
from aicli.storage.processes import Processes
from aicli.storage.retention import Retention
from aicli.storage.secret_key import SecretKey
from aicli.storage.sessions import Sessions
from aicli.storage.task_outcomes import TaskOutcomes
from aicli.storage.task_queue import TaskQueue
from aicli.storage.tasks import Tasks
from aicli.storage.transcripts import Transcripts

LEASE_CONNECTIONS = 2  # the lease actor's, and a reader of the live nodes at once


def open_store(url: str | None = None, *, secret_key: SecretKey | None = None) -> Store:
    """Connect to ``url`` (default: ``resolve_database_url()``) and migrate it to the latest.

    ``secret_key`` seals principals' own credentials (default: none configured, so the
    default file next to a SQLite database, and none with PostgreSQL).
    """
    url = database.resolve_database_url(url)
    engine = Engine(database.connect(url), url)
    try:
        migrations.migrate(engine)
        engine.ping()
    except BaseException:
        engine.close()
        raise
    lease_engine = None
    if engine.is_postgres:  # renewals must not queue behind a busy pool: a late one fences
        lease_engine = Engine(database.connect(url, max_connections=LEASE_CONNECTIONS), url)
    return Store(engine, lease_engine, secret_key)


class Store:
    def __init__(
        self,
        engine: Engine,
        lease_engine: Engine | None = None,
        secret_key: SecretKey | None = None,
    ) -> None:
        """``lease_engine``: connections of the node's lease alone (default: ``engine``'s);
        ``secret_key``: what seals principals' own credentials (default: ``open_store``'s)."""
        self.engine = engine
        self._lease_engine = lease_engine
        self.database_url = engine.url
        ended = EndedTasks()
        self.events = Events(engine)
        self.sessions = Sessions(engine, self.events)
        self.tasks = Tasks(engine, ended)
        self.queue = TaskQueue(engine, self.events)
        self.approvals = Approvals(engine, self.events)
        self.outcomes = TaskOutcomes(engine, self.events, self.approvals, ended)
        self.processes = Processes(engine)
        self.principals = Principals(engine)
        self.credentials = PrincipalCredentials(engine, secret_key or SecretKey(engine.url))
        self.nodes = Nodes(lease_engine or engine)
        self.ownership = Ownership(engine, self.outcomes)
        self.transcripts = Transcripts(engine)
        self.retention = Retention(engine, ended)
        self._bind_entry_points()

    def _bind_entry_points(self) -> None:
        """The names callers use, bound to the repository that answers each: no call
        through the store costs a frame more than the repository's own."""
        sessions, tasks, events, processes = self.sessions, self.tasks, self.events, self.processes
        self.create_session = sessions.create
        self.get_session = sessions.get
        self.list_sessions = sessions.list
        self.open_session_count = sessions.open_count
        self.session_owner = sessions.owner
        self.close_session = sessions.close
        self.create_task = self.queue.accept
        self.start_next_task = self.queue.start_next
        self.finish_task = self.outcomes.finish
        self.cancel_pending = self.outcomes.cancel_pending
        self.get_task = tasks.get
        self.list_tasks = tasks.list
        self.task_for_idempotency_key = tasks.for_idempotency_key
        self.task_owner = tasks.owner
        self.task_ended = tasks.ended
        self.running_task_of = tasks.running_of
        self.has_pending = tasks.has_pending
        self.pending_task_ids = tasks.pending_ids
        self.task_status_counts = tasks.status_counts
        self.append_events = events.append
        self.list_events = events.list
        self.event_page = events.page
        self.record_process = processes.record
        self.forget_process = processes.forget
        self.recorded_processes = processes.recorded

    @property
    def is_postgres(self) -> bool:
        return self.engine.is_postgres

    def close(self) -> None:
        self.engine.close()
        if self._lease_engine is not None:
            self._lease_engine.close()

    def ping(self) -> None:
        self.engine.ping()

    def update_session(self, session_id: str, *, claude_session_id: str | None) -> Session:
        """The session continues ``claude_session_id`` (``Sessions.set_claude_session``)."""
        return self.sessions.set_claude_session(session_id, claude_session_id)

    def running_tasks(self, node_id: str) -> list[Task]:
        """The running tasks of the sessions ``node_id`` holds (``Tasks.running_on``)."""
        return self.tasks.running_on(node_id)

    def revoke_principal(
        self, principal_id: str, pending_error: str
    ) -> tuple[Principal, list[tuple[str, list[str], str | None]]]:
        """Revoke the principal and close its open sessions (``close_session``), in one commit.

        Returns it and, for each session it closed, ``(session id, cancelled task ids,
        running task id)``. A session it opens meanwhile waits for this commit and is then
        refused (``admission``); revoked already, only what is still open is closed.
        """

        def write() -> tuple[Principal, list[tuple[str, list[str], str | None]]]:
            principal = self.principals.revoke(principal_id)
            return principal, self.sessions.close_owned_within(principal_id, pending_error)

        return self.engine.write(write)
