"""Column types that behave the same on SQLite and PostgreSQL.

Times are stored as naive UTC with microseconds in one fixed-width text form
(``2026-11-24 04:33:10.000000``), so that SQLite, which keeps them as text,
compares them in time order and a keyset cursor matches a stored value exactly;
PostgreSQL parses the same text into ``TIMESTAMP``. JSON is stored as text
rather than ``JSONB`` so that both backends hold the same bytes and nothing
depends on one server's JSON operators.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from peewee import Field, TextField

TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def to_db_time(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: aicli stores aware UTC times only")
    return value.astimezone(UTC).strftime(TIME_FORMAT)


def from_db_time(value: str | datetime) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class UtcDateTimeField(Field):
    field_type = "DATETIME"

    def db_value(self, value: datetime | None) -> str | None:
        return None if value is None else to_db_time(value)

    def python_value(self, value: str | datetime | None) -> datetime | None:
        return None if value is None else from_db_time(value)


class JsonTextField(TextField):
    def db_value(self, value: Any) -> str | None:
        if value is None:
            return None
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def python_value(self, value: str | None) -> Any:
        return None if value is None else json.loads(value)
