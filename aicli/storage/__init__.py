"""Sessions, tasks, their events and child processes, kept by Peewee in SQLite or PostgreSQL.

``open_store`` opens (and migrates) a database; ``Store`` composes its repositories:

- ``sessions``, ``tasks`` (reads), ``task_queue`` (accept, start), ``task_outcomes``
  (ends), ``events``, ``processes``: the nouns of a task's life;
- ``approvals``, ``principals``, ``credentials``, ``nodes``, ``ownership``,
  ``transcripts``, ``retention``: what a deployment adds to them;
- beneath them: ``engine`` (how every call runs), ``database`` (URLs, connections),
  ``schema`` and ``migrations``, ``rows`` and ``fields`` (rows to values), ``sql``,
  ``counters``, ``listing`` and ``paging`` (shared SQL, counters, pages), ``ended`` (ended
  tasks kept as read), ``transitions`` (the task state machine), ``admission``, ``usage``
  and ``idempotency`` (checks a write makes);
- beside them: ``signals`` (wake-ups between nodes), ``server_lock`` (one server per
  SQLite file), ``secret_key`` (what seals principals' credentials).
"""

from aicli.storage.database import DATABASE_URL_ENV, DEFAULT_DATABASE_URL, resolve_database_url
from aicli.storage.store import Store, open_store

__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_DATABASE_URL",
    "Store",
    "open_store",
    "resolve_database_url",
]
