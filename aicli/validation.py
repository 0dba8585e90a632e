"""Checks every client-supplied value once, for HTTP and for embedders alike.

The runtime calls ``session_fields`` and ``task_fields`` itself, so a program
that embeds aicli gets exactly the errors an HTTP client gets. Each failure is
an ``InvalidRequest`` whose message is one sentence naming the field and, where
it helps, the value; ``details["field"]`` names the field for programs.

Policies the contract leaves open, chosen here:

- Unknown fields are rejected (a typo must not silently fall back to a default).
- ``null`` for an optional field means "not given".
- A command made only of whitespace is rejected: Claude has nothing to answer.
- Non-finite numbers (NaN, Infinity) are rejected everywhere.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from aicli.errors import InvalidRequest
from aicli.models import PERMISSION_MODES

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_WAIT_S = 60.0
ORDERS = ("desc", "asc")

SESSION_FIELDS = (
    "workdir",
    "model",
    "permission_mode",
    "allowed_tools",
    "disallowed_tools",
    "append_system_prompt",
    "max_turns",
    "metadata",
)
TASK_FIELDS = ("command", "timeout_s", "metadata")

# RFC 3339 date-time. A space before the offset is read as "+": an unencoded
# "+01:00" in a query string arrives as " 01:00".
_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?"
    r"(?P<zone>[Zz]|[+\- ]\d{2}:\d{2})"
)
_INT = re.compile(r"[0-9]+")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def _invalid(field: str, message: str, **details: Any) -> InvalidRequest:
    return InvalidRequest(message, {"field": field, **details})


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def reject_unknown(fields: Mapping[str, Any], known: Sequence[str], what: str) -> None:
    unknown = sorted(str(name) for name in fields if name not in known)
    if unknown:
        names = ", ".join(f"'{name}'" for name in unknown)
        noun = "field" if len(unknown) == 1 else "fields"
        raise InvalidRequest(
            f"Unknown {what} {noun} {names}; allowed: {', '.join(known)}.",
            {"unknown_fields": unknown, "allowed_fields": list(known)},
        )


def _optional_string(fields: Mapping[str, Any], name: str, *, non_empty: bool) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(name, f"'{name}' must be a string, not {type_name(value)}.")
    if non_empty and not value.strip():
        raise _invalid(name, f"'{name}' must not be empty.")
    return value


def _string_list(fields: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = fields.get(name)
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise _invalid(name, f"'{name}' must be an array of strings, not {type_name(value)}.")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _invalid(
                name, f"'{name}[{index}]' must be a string, not {type_name(item)}.", index=index
            )
        if not item.strip():
            raise _invalid(name, f"'{name}[{index}]' must not be empty.", index=index)
    return tuple(value)


def _metadata(fields: Mapping[str, Any]) -> dict[str, str]:
    value = fields.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _invalid(
            "metadata", f"'metadata' must be an object of strings, not {type_name(value)}."
        )
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise _invalid(
                "metadata",
                f"'metadata.{key}' must be a string, not {type_name(item)}.",
                key=str(key),
            )
    return dict(value)


def _workdir(fields: Mapping[str, Any], workspace_root: str | None) -> str:
    value = fields.get("workdir")
    if value is None:
        raise _invalid("workdir", "'workdir' is required.")
    if not isinstance(value, str):
        raise _invalid("workdir", f"'workdir' must be a string, not {type_name(value)}.")
    if not value.strip() or "\x00" in value:
        raise _invalid("workdir", "'workdir' must be a directory path.")
    path = os.path.realpath(value)
    if not os.path.isdir(path):
        raise _invalid("workdir", f"'workdir' {value!r} is not an existing directory.")
    if workspace_root is not None:
        root = os.path.realpath(workspace_root)
        if os.path.commonpath([root, path]) != root:
            raise _invalid(
                "workdir", f"'workdir' {value!r} lies outside the workspace root {root!r}."
            )
    return path


def session_fields(fields: Mapping[str, Any], *, workspace_root: str | None) -> dict[str, Any]:
    """The create-session body, checked and normalised into store keyword arguments.

    ``workdir`` comes back as its real path, so symlinks and ``..`` can't
    smuggle a session outside the workspace root after the check.
    """
    if not isinstance(fields, Mapping):
        raise InvalidRequest(f"The session must be a JSON object, not {type_name(fields)}.")
    reject_unknown(fields, SESSION_FIELDS, "session")
    permission_mode = fields.get("permission_mode")
    if permission_mode is not None and permission_mode not in PERMISSION_MODES:
        raise _invalid(
            "permission_mode",
            f"'permission_mode' must be one of {', '.join(PERMISSION_MODES)}, "
            f"not {permission_mode!r}.",
        )
    max_turns = fields.get("max_turns")
    if max_turns is not None and (
        isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1
    ):
        raise _invalid("max_turns", f"'max_turns' must be an integer >= 1, not {max_turns!r}.")
    return {
        "workdir": _workdir(fields, workspace_root),
        "model": _optional_string(fields, "model", non_empty=True),
        "permission_mode": permission_mode,
        "allowed_tools": _string_list(fields, "allowed_tools"),
        "disallowed_tools": _string_list(fields, "disallowed_tools"),
        "append_system_prompt": _optional_string(fields, "append_system_prompt", non_empty=False),
        "max_turns": max_turns,
        "metadata": _metadata(fields),
    }


def task_fields(fields: Mapping[str, Any], *, max_command_chars: int) -> dict[str, Any]:
    """The submit body, checked: ``command``, ``timeout_s`` (float or None), ``metadata``."""
    if not isinstance(fields, Mapping):
        raise InvalidRequest(f"The task must be a JSON object, not {type_name(fields)}.")
    reject_unknown(fields, TASK_FIELDS, "task")
    command = fields.get("command")
    if command is None:
        raise _invalid("command", "'command' is required.")
    if not isinstance(command, str):
        raise _invalid("command", f"'command' must be a string, not {type_name(command)}.")
    if not command.strip():
        raise _invalid("command", "'command' must not be empty or only whitespace.")
    if len(command) > max_command_chars:
        raise _invalid(
            "command",
            f"'command' has {len(command)} characters; the most allowed is {max_command_chars}.",
            max_chars=max_command_chars,
        )
    timeout_s = fields.get("timeout_s")
    if timeout_s is not None:
        if (
            isinstance(timeout_s, bool)
            or not isinstance(timeout_s, int | float)
            or not math.isfinite(timeout_s)
            or timeout_s <= 0
        ):
            raise _invalid(
                "timeout_s", f"'timeout_s' must be a number of seconds > 0, not {timeout_s!r}."
            )
        timeout_s = float(timeout_s)
    return {"command": command, "timeout_s": timeout_s, "metadata": _metadata(fields)}


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
    except ValueError:
        raise _invalid(name, f"'{name}' is not a valid date and time: {value!r}.") from None
    return parsed.astimezone(UTC)


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


def parse_limit(value: str | None, name: str = "limit") -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not _INT.fullmatch(value) or not 1 <= int(value) <= MAX_LIMIT:
        raise _invalid(name, f"'{name}' must be an integer from 1 to {MAX_LIMIT}, not {value!r}.")
    return int(value)


def parse_order(value: str | None, name: str = "order") -> str:
    if value is None:
        return ORDERS[0]
    if value not in ORDERS:
        raise _invalid(name, f"'{name}' must be 'desc' or 'asc', not {value!r}.")
    return value


def parse_wait(value: str | None, name: str = "wait") -> float:
    """Seconds to hold a task answer, 0 to 60; fractions allowed."""
    if value is None:
        return 0.0
    if not _NUMBER.fullmatch(value) or float(value) > MAX_WAIT_S:
        raise _invalid(
            name, f"'{name}' must be a number of seconds from 0 to {MAX_WAIT_S:g}, not {value!r}."
        )
    return float(value)


def parse_after(value: str | None, name: str = "after") -> int:
    """An event sequence number; events with a greater ``seq`` are wanted."""
    if value is None:
        return 0
    if not _INT.fullmatch(value.strip()):
        raise _invalid(name, f"'{name}' must be an integer >= 0, not {value!r}.")
    return int(value)
