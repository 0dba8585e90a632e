"""Logging of ``aicli serve``: one line per record, as logfmt (default) or JSON.

A line starts with ``ts level logger msg`` and goes on with every field the
call passed in ``extra`` (``task_id``, ``session_id``, ``status``, ...), so
operators can follow one task or one request with ``grep task_id=...``.
Values that could break the line (spaces, quotes, newlines, control
characters) are quoted and escaped: a client-chosen string can never forge
a second line.

Prompts are never logged at INFO or above; code logs their length instead.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from aicli.errors import InvalidRequest

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Everything a LogRecord carries by itself; the rest came in through ``extra``.
STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime"}
)
_OWN = "_aicli_handler"
# Most values (ids, routes, numbers, levels) are plain words: one regex match
# settles them, where a scan character by character cost a third of a request.
_BARE = re.compile(r"[A-Za-z0-9_.:/@+-]+")
_NEEDS_QUOTES = re.compile(r'[ "=\\]')


def record_fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    """The fields of one line, in order: the fixed four, the extras, then any traceback."""
    fields: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in STANDARD_ATTRIBUTES and not key.startswith("_") and key not in fields:
            fields[key] = value
    if record.exc_info:
        fields["exc"] = formatter.formatException(record.exc_info)
    return fields


def logfmt_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = value if isinstance(value, str) else str(value)
    if _BARE.fullmatch(text) or (text and text.isprintable() and not _NEEDS_QUOTES.search(text)):
        return text
    # JSON escapes quotes, backslashes and control characters; ASCII-only
    # escaping also catches the other line breaks (U+2028, NEL) when present.
    return json.dumps(text, ensure_ascii=not text.isprintable())


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record, self)
        return " ".join(f"{key}={logfmt_value(value)}" for key, value in fields.items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record_fields(record, self), default=str)


FORMATTERS: dict[str, type[logging.Formatter]] = {
    "logfmt": LogfmtFormatter,
    "json": JsonFormatter,
}


def configure(level: str = "INFO", fmt: str = "logfmt", stream: TextIO | None = None) -> None:
    """Send every record at ``level`` or above to ``stream`` (stderr), one line each.

    Calling it again replaces the handler it installed before, and leaves
    handlers that others installed alone.
    """
    name = level.upper()
    if name not in LEVELS:
        raise InvalidRequest(f"Unknown log level {level!r}; use {', '.join(LEVELS)}.")
    if fmt not in FORMATTERS:
        raise InvalidRequest(f"Unknown log format {fmt!r}; use {' or '.join(FORMATTERS)}.")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(FORMATTERS[fmt]())
    setattr(handler, _OWN, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OWN, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(name)
