"""Logging of ``aicli serve``: one line per record, as logfmt (default) or JSON.

A line starts with ``ts level logger msg`` and goes on with every field the
call passed in ``extra`` (``task_id``, ``session_id``, ``status``, ...), so
operators can follow one task or one request with ``grep task_id=...``.
Values that could break the line (spaces, quotes, newlines, control
characters) are quoted and escaped: a client-chosen string can never forge
a second line.

Prompts are never logged at INFO or above; code logs their length instead.

``aicli serve`` writes its lines in batches (``BatchedHandler``): a line per
request, each written and flushed on the request's own thread, cost more than
the rest of a cached ``GET /tasks/{id}``, and with 16 requests at once the
write calls and the handler's lock cut throughput fourfold. A record is queued
as it is; one writer thread formats and writes what gathered every
``BATCH_S``. Warnings and errors are written at once, by the thread that logs
them, so the lines that explain a crash are never left in a queue; a SIGKILL
can lose at most the last ``BATCH_S`` of other lines.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import sys
import threading
import time
from typing import Any, TextIO

from aicli.errors import InvalidRequest

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Everything a LogRecord carries by itself; the rest came in through ``extra``.
STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime"}
)
_OWN = "_aicli_handler"
# Values of plain word characters need no quoting; a scan character by
# character cost a third of a request.
_BARE = re.compile(r"[A-Za-z0-9_.:/@+-]+")
_NEEDS_QUOTES = re.compile(r'[ "=\\]')


class _Seconds:
    """The last second formatted, as one tuple so that threads never see half an update."""

    last: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    """``created`` as ISO 8601 UTC with milliseconds; the second is formatted once per second."""
    second = int(created)
    cached = _Seconds.last
    if cached[0] != second:
        cached = _Seconds.last = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int((created - second) * 1000):03d}Z"


def record_fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    """The fields of one line, in order: the fixed four, the extras, then any traceback."""
    fields: dict[str, Any] = {
        "ts": _timestamp(record.created),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in record.__dict__.items():
        if key not in STANDARD_ATTRIBUTES and key[0] != "_" and key not in fields:
            fields[key] = value
    if record.exc_info:
        fields["exc"] = formatter.formatException(record.exc_info)
    return fields


def logfmt_value(value: Any) -> str:
    kind = type(value)
    if kind is str:
        # Most values (ids, routes, levels) are plain words: one regex match settles them.
        if _BARE.fullmatch(value):
            return value
        text = value
    elif kind is int or kind is float:
        return repr(value)
    elif value is None:
        return "null"
    elif kind is bool:
        return "true" if value else "false"
    elif isinstance(value, int | float):  # subclasses (bool is handled above)
        return repr(value)
    else:
        text = str(value)
    if _BARE.fullmatch(text) or (text and text.isprintable() and not _NEEDS_QUOTES.search(text)):
        return text
    # JSON escapes quotes, backslashes and control characters; ASCII-only
    # escaping also catches the other line breaks (U+2028, NEL) when present.
    return json.dumps(text, ensure_ascii=not text.isprintable())


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record, self)
        return " ".join([f"{key}={logfmt_value(value)}" for key, value in fields.items()])


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record_fields(record, self), default=str)


class BatchedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    BATCH_S = 0.1

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._queue: collections.deque[logging.LogRecord] = collections.deque()
        self._due = threading.Event()
        self._closed = False
        self._writer = threading.Thread(target=self._write_batches, name="aicli-log", daemon=True)
        self._writer.start()

    def handle(self, record: logging.LogRecord) -> bool:
        """As ``Handler.handle``, without taking the handler's lock: ``emit`` needs none."""
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self._queue.append(record)  # deque appends are atomic: no lock on the hot path
        if record.levelno >= logging.WARNING:
            self.flush()
        elif not self._due.is_set():
            self._due.set()

    def flush(self) -> None:
        """Write every queued record now, in order."""
        with self.lock:  # type: ignore[union-attr]
            lines = []
            while True:
                try:
                    record = self._queue.popleft()
                except IndexError:
                    break
                try:
                    lines.append(self.format(record) + self.terminator)
                except Exception:
                    self.handleError(record)
            if lines:
                try:
                    self.stream.write("".join(lines))
                    self.stream.flush()
                except Exception:
                    self.handleError(record)

    def close(self) -> None:
        self._closed = True
        self._due.set()
        self.flush()
        super().close()

    def _write_batches(self) -> None:
        while not self._closed:
            self._due.wait()
            time.sleep(self.BATCH_S)  # let a batch gather
            self._due.clear()
            self.flush()


def flush() -> None:
    """Write what aicli's handler holds, for a line that must be seen at once (serving on...)."""
    for handler in logging.getLogger().handlers:
        if getattr(handler, _OWN, False):
            handler.flush()


FORMATTERS: dict[str, type[logging.Formatter]] = {
    "logfmt": LogfmtFormatter,
    "json": JsonFormatter,
}


def configure(
    level: str = "INFO",
    fmt: str = "logfmt",
    stream: TextIO | None = None,
    *,
    batched: bool = False,
) -> None:
    """Send every record at ``level`` or above to ``stream`` (stderr), one line each.

    ``batched`` writes them from a thread of their own (see the module docstring).
    Calling it again replaces the handler it installed before, and leaves
    handlers that others installed alone.
    """
    name = level.upper()
    if name not in LEVELS:
        raise InvalidRequest(f"Unknown log level {level!r}; use {', '.join(LEVELS)}.")
    if fmt not in FORMATTERS:
        raise InvalidRequest(f"Unknown log format {fmt!r}; use {' or '.join(FORMATTERS)}.")
    target = sys.stderr if stream is None else stream
    handler = BatchedHandler(target) if batched else logging.StreamHandler(target)
    if batched:
        # What no line shows is not gathered per record (the logging HOWTO's "Optimization").
        logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
        logging._srcfile = None  # type: ignore[attr-defined]
    handler.setFormatter(FORMATTERS[fmt]())
    setattr(handler, _OWN, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OWN, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(name)
