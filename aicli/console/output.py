"""How the terminal client writes what the server sent: tables, ``field<TAB>value`` lines, text.

Nothing the server sent reaches the terminal with a control character in it,
tty or not: a model steered by a file's contents could otherwise print an
OSC 52 (write the clipboard), an OSC 8 (a disguised link) or cursor moves that
rewrite what the user already saw. A table cell or a field is escaped
(``cell``: it must also keep its line and column); Claude's text, an error or
any other free text is stripped (``plain``: it stays readable as prose).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, TextIO

import msgspec

from aicli.console.hidden import visible

# A whole escape sequence goes, not just its ESC, lest its parameters show as litter:
# OSC, DCS, SOS, PM and APC up to their terminator (BEL or ST; an unterminated one up to the
# end of its line, so no more text is lost than that), CSI, and two-character escapes; the
# 8-bit C1 forms of the introducers too.
ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|\x1b[ -/]*[0-~]?"
)
# What is left: C0 but for \t and \n, DEL, C1.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# The 8-bit C1 controls, which JSON leaves as they are; escaped as \u00XX they mean the same.
JSON_UNSAFE = re.compile(r"[\x7f-\x9f]")


def plain(text: str) -> str:
    """For prose (Claude's text, an error): stripped, not escaped, it reads as it was meant."""
    return CONTROL.sub("", ESCAPE_SEQUENCE.sub("", text))


def json_line(text: str) -> str:
    """JSON text that is safe on a terminal and decodes to the same value."""
    return JSON_UNSAFE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


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
    out = out or sys.stdout
    for name in value.__struct_fields__:
        out.write(f"{name}\t{value_text(getattr(value, name))}\n")
    out.flush()


def table(header: Sequence[str], rows: Iterable[Sequence[str]], out: TextIO | None = None) -> int:
    """A header and tab-separated rows, written as they come; returns the number of rows.

    Every cell goes through ``cell`` (which changes nothing already escaped), so
    an id or a status the server sent is as safe as the values formatted here.
    """
    out = out or sys.stdout
    rows = iter(rows)
    first = next(rows, None)  # the first page is asked for before the header: errors come alone
    out.write("\t".join(header) + "\n")
    if first is None:
        out.flush()
        return 0
    out.write("\t".join(map(cell, first)) + "\n")
    count = 1
    for row in rows:
        out.write("\t".join(map(cell, row)) + "\n")
        count += 1
    out.flush()
    return count


def tool_line(name: str, given: Any) -> str:
    """A tool use in one short line: ``Bash: echo hi``, ``Write: notes.txt``.

    Its hidden characters are shown as ``<U+XXXX>`` (``hidden.visible``): this line is
    what a person reads before allowing the tool use.
    """
    detail = ""
    if isinstance(given, dict):
        for key in ("command", "file_path", "path", "pattern", "url", "query", "description"):
            if isinstance(given.get(key), str):
                detail = given[key]
                break
        else:
            if given:
                detail = json.dumps(given, ensure_ascii=False, separators=(",", ":"))
    return shorten(visible(f"{name}: {detail}" if detail else name), 100)


def assistant_parts(data: Any) -> Iterator[tuple[str, str]]:
    """An ``assistant`` event's blocks as ``("text", text)`` or ``("tool", tool_line)``.

    The event holds what the CLI sent, which need not be the shape documented:
    anything that is not a block of one of those kinds is passed over.
    """
    content = data.get("content") if isinstance(data, dict) else None
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            yield "text", str(block.get("text") or "")
        elif block.get("type") == "tool_use":
            yield "tool", tool_line(str(block.get("name")), block.get("input"))
