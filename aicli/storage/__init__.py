"""Sessions, tasks, their events and child processes, kept by Peewee in SQLite or PostgreSQL."""

from aicli.storage.database import DATABASE_URL_ENV, DEFAULT_DATABASE_URL, resolve_database_url
from aicli.storage.store import Store, open_store

__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_DATABASE_URL",
    "Store",
    "open_store",
    "resolve_database_url",
]
