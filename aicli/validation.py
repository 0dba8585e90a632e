"""What the contract's structs cannot check: two query forms, and facts about this machine.

Request bodies and query parameters are checked by ``aicli.contract``. What is
left is checked here, at the runtime's boundary or in the HTTP layer's query
parsing, with the same kind of error: an ``InvalidRequest`` whose message is
one sentence naming the field and the value, and whose ``details["field"]``
names the field for programs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from aicli import workspace
from aicli.contract import SessionCreate
from aicli.errors import InvalidRequest

# RFC 3339 date-time. A space before the offset is read as "+": an unencoded
# "+01:00" in a query string arrives as " 01:00".
_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?"
    r"(?P<zone>[Zz]|[+\- ]\d{2}:\d{2})"
)


def _invalid(field: str, message: str, **details: Any) -> InvalidRequest:
    return InvalidRequest(message, {"field": field, **details})


def unstorable(text: str) -> str | None:
    """What in ``text`` no database column or process argument can carry, or None.

    PostgreSQL text and ``execve`` arguments refuse NUL; UTF-8 refuses unpaired
    surrogates (which JSON's ``\\udXXX`` escapes can produce).
    """
    if "\x00" in text:
        return "a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "an unpaired surrogate"
    return None


def session_fields(request: SessionCreate, workspace_root: str | None) -> dict[str, Any]:
    """A checked create-session body as the store's arguments: nulls as empty, and the
    workdir (and read paths) as real paths, so symlinks and ``..`` cannot smuggle them
    outside the root (or the principal's policy, ``policy.admit``)."""
    fields = msgspec.structs.asdict(request)
    fields.update(
        workdir=workspace.confined(request.workdir, workspace_root),
        allowed_tools=tuple(request.allowed_tools or ()),
        disallowed_tools=tuple(request.disallowed_tools or ()),
        metadata=dict(request.metadata or {}),
        max_turns=None if request.max_turns is None else int(request.max_turns),
        network_domains=tuple(request.network_domains or ()),
        read_paths=tuple(dict.fromkeys(os.path.realpath(p) for p in request.read_paths or ())),
    )
    return fields


def principal_root(value: str, workspace_root: str | None) -> str:
    """A principal's own workspace root: an existing directory inside the global one."""
    return workspace.confined(value, workspace_root, field="workspace_root")


def command_fits(command: str, max_chars: int) -> None:
    """This server may be set to take shorter commands than the contract allows."""
    if len(command) > max_chars:
        raise _invalid(
            "command",
            f"'command' has {len(command)} characters; the most allowed is {max_chars}.",
            max_chars=max_chars,
        )


def parse_time(value: str, name: str) -> datetime:
    """Any RFC 3339 date-time with ``Z`` or an offset, as an aware UTC datetime."""
    match = _RFC3339.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise _invalid(
            name,
            f"'{name}' must be an RFC 3339 time with a Z or an offset, "
            f"like 2026-01-31T12:00:00Z, not {value!r}.",
        )
    zone = match["zone"].upper()
    zone = "+00:00" if zone == "Z" else zone.replace(" ", "+")
    frac = (match["frac"] or "0")[:6].ljust(6, "0")
    try:
        parsed = datetime.fromisoformat(f"{match['date']}T{match['time']}.{frac}{zone}")
        # An offset can push year 1 or 9999 out of range once moved to UTC.
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise _invalid(name, f"'{name}' is not a valid date and time: {value!r}.") from None


def parse_statuses(value: str, allowed: Sequence[str], name: str) -> list[str]:
    """A comma list of statuses (repeats dropped), each one of ``allowed``."""
    items = [item.strip() for item in value.split(",")]
    if not all(items):
        raise _invalid(name, f"'{name}' must be a comma list of {', '.join(allowed)}.")
    unknown = [item for item in items if item not in allowed]
    if unknown:
        raise _invalid(
            name,
            f"'{name}' has unknown value {unknown[0]!r}; allowed: {', '.join(allowed)}.",
            allowed=list(allowed),
        )
    return list(dict.fromkeys(items))
