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

import msgspec
from peewee import Field, TextField

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def to_db_time(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: aicli stores aware UTC times only")
    # ``isoformat`` is twice as fast as ``strftime``; the slice drops "+00:00".
    return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]


def from_db_time(value: str | datetime) -> datetime:
    """An aware UTC time from what a driver returns for a stored one.

    SQLite returns the stored text; appending the offset lets ``fromisoformat``
    make it aware, several times faster than ``.replace(tzinfo=UTC)`` after it.
    PostgreSQL's connections already return aware times (see ``database``).
    """
    if value.__class__ is str:
        return datetime.fromisoformat(value + "+00:00")
    if value.tzinfo is UTC:
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def to_db_float(value: float | None) -> float | None:
    """``value`` to 15 significant digits, the most every double keeps through text.

    SQLite's JSON functions write a REAL with 15 digits (``rows.TASK_JSON_ROW``
    reads pages through them), so a stored float must be one that 15 digits
    give back exactly. A cost or a timeout loses nothing that matters.
    """
    return None if value is None else float(f"{value:.15g}")


def to_json_text(value: Any) -> str:
    """Compact JSON with text as it is (no ASCII escapes); msgspec, several times faster."""
    return _encoder.encode(value).decode()


def from_json_text(text: str) -> Any:
    # Most metadata is empty, and even decoding "{}" costs something.
    if text == "{}":
        return {}
    try:
        return _decoder.decode(text)
    except msgspec.DecodeError:  # what the standard library wrote once and msgspec refuses (NaN)
        return json.loads(text)


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
        return to_json_text(value)

    def python_value(self, value: str | None) -> Any:
        return None if value is None else from_json_text(value)
