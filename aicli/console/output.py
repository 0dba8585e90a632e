"""How the terminal client writes values: tab-separated tables and ``field<TAB>value`` lines.

Every cell is escaped (``cell``), so no value can break a line or a column,
nor put a control character on the terminal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, TextIO

import msgspec


def cell(text: str) -> str:
    """``text`` with control characters escaped, so it cannot break a line or a column."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def shorten(text: str, width: int = 80) -> str:
    text = cell(text)
    return text if len(text) <= width else f"{text[: width - 1]}…"


def value_text(value: Any) -> str:
    """One value as a cell: ``-`` for none, times in RFC 3339, structures as compact JSON."""
    if value is None:
        return "-"
    if isinstance(value, Enum):
        return cell(str(value.value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, float):
        return f"{value:.15g}"
    if isinstance(value, str | int):
        return cell(str(value))
    return cell(json.dumps(msgspec.to_builtins(value), ensure_ascii=False, separators=(",", ":")))


def show(value: msgspec.Struct, out: TextIO | None = None) -> None:
    """Each field of ``value`` as a ``field<TAB>value`` line, in declaration order."""
    out = out or sys.stdout
    for name in value.__struct_fields__:
        out.write(f"{name}\t{value_text(getattr(value, name))}\n")
    out.flush()


def table(header: Sequence[str], rows: Iterable[Sequence[str]], out: TextIO | None = None) -> int:
    """A header and tab-separated rows, written as they come; returns the number of rows."""
    out = out or sys.stdout
    rows = iter(rows)
    first = next(rows, None)  # the first page is asked for before the header: errors come alone
    out.write("\t".join(header) + "\n")
    if first is None:
        out.flush()
        return 0
    out.write("\t".join(first) + "\n")
    count = 1
    for row in rows:
        out.write("\t".join(row) + "\n")
        count += 1
    out.flush()
    return count


def tool_line(name: str, given: Any) -> str:
    """A tool use in one short line: ``Bash: echo hi``, ``Write: notes.txt``."""
    detail = ""
    if isinstance(given, dict):
        for key in ("command", "file_path", "path", "pattern", "url", "query", "description"):
            if isinstance(given.get(key), str):
                detail = given[key]
                break
        else:
            if given:
                detail = json.dumps(given, ensure_ascii=False, separators=(",", ":"))
    return shorten(f"{name}: {detail}" if detail else name, 100)
