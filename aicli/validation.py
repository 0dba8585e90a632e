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
# A page of an event log: events are small and read in order, so pages can be long.
MAX_EVENT_LIMIT = 1000
MAX_WAIT_S = 60.0
# Both fit the database's 32-bit integer columns; larger numbers are refused, not stored.
MAX_TURNS = 10_000
MAX_SEQ = 2**31 - 1
# A week: far beyond any real turn, and far below what a timer thread can wait.
MAX_TIMEOUT_S = 7 * 24 * 3600.0
# One command-line argument of the CLI; Linux refuses more than 128 KiB (E2BIG).
MAX_ARGUMENT_BYTES = 100_000
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
# What clients send for a JSON Schema number: decimals, with an exponent if they like.
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


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


def _text(field: str, value: str, *, shown: str | None = None, **details: Any) -> str:
    """``value`` if storable; ``shown`` names the part of ``field`` it is, like ``tools[2]``."""
    problem = unstorable(value)
    if problem is not None:
        raise _invalid(field, f"'{shown or field}' must not contain {problem}.", **details)
    return value


def _argument(name: str, value: str) -> str:
    """A string passed to the CLI as one argument: storable, and short enough for ``execve``."""
    size = len(_text(name, value).encode("utf-8"))
    if size > MAX_ARGUMENT_BYTES:
        raise _invalid(
            name,
            f"'{name}' has {size} bytes in UTF-8; the most allowed is {MAX_ARGUMENT_BYTES}.",
            max_bytes=MAX_ARGUMENT_BYTES,
        )
    return value


def reject_unknown(fields: Mapping[str, Any], known: Sequence[str], what: str) -> None:
    unknown = sorted(str(name) for name in fields if name not in known)
    if unknown:
        names = ", ".join(f"'{name}'" for name in unknown)
        noun = "field" if len(unknown) == 1 else "fields"
        raise InvalidRequest(
            f"Unknown {what} {noun} {names}; allowed: {', '.join(known)}.",
            {"unknown_fields": unknown, "allowed_fields": list(known)},
        )


def _optional_argument(fields: Mapping[str, Any], name: str, *, non_empty: bool) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(name, f"'{name}' must be a string, not {type_name(value)}.")
    if non_empty and not value.strip():
        raise _invalid(name, f"'{name}' must not be empty.")
    return _argument(name, value)


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
        _text(name, item, shown=f"{name}[{index}]", index=index)
    # The CLI gets the list as one comma-joined argument.
    _argument(name, ",".join(value))
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
        _text("metadata", key, key=key)
        _text("metadata", item, shown=f"metadata.{key}", key=key)
    return dict(value)


def _workdir(fields: Mapping[str, Any], workspace_root: str | None) -> str:
    value = fields.get("workdir")
    if value is None:
        raise _invalid("workdir", "'workdir' is required.")
    if not isinstance(value, str):
        raise _invalid("workdir", f"'workdir' must be a string, not {type_name(value)}.")
    if not value.strip():
        raise _invalid("workdir", "'workdir' must be a directory path.")
    _text("workdir", value)
    path = os.path.realpath(value)
    # Confinement first, so that clients cannot probe which paths exist outside the root.
    if workspace_root is not None:
        root = os.path.realpath(workspace_root)
        if os.path.commonpath([root, path]) != root:
            raise _invalid(
                "workdir", f"'workdir' {value!r} lies outside the workspace root {root!r}."
            )
    if not os.path.isdir(path):
        raise _invalid("workdir", f"'workdir' {value!r} is not an existing directory.")
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
        isinstance(max_turns, bool)
        or not isinstance(max_turns, int)
        or not 1 <= max_turns <= MAX_TURNS
    ):
        raise _invalid(
            "max_turns",
            f"'max_turns' must be an integer >= 1 and <= {MAX_TURNS}, not {max_turns!r}.",
        )
    return {
        "workdir": _workdir(fields, workspace_root),
        "model": _optional_argument(fields, "model", non_empty=True),
        "permission_mode": permission_mode,
        "allowed_tools": _string_list(fields, "allowed_tools"),
        "disallowed_tools": _string_list(fields, "disallowed_tools"),
        "append_system_prompt": _optional_argument(fields, "append_system_prompt", non_empty=False),
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
    _text("command", command)
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
            or not 0 < timeout_s <= MAX_TIMEOUT_S
        ):
            raise _invalid(
                "timeout_s",
                f"'timeout_s' must be a number of seconds > 0 and <= {MAX_TIMEOUT_S:g}, "
                f"not {timeout_s!r}.",
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


def _bounded_int(text: str, low: int, high: int) -> int | None:
    """The number ``text`` spells if it is in [low, high], else None.

    Too many digits are refused before ``int()``, which raises past 4300 of them.
    """
    if not _INT.fullmatch(text) or len(text.lstrip("0")) > len(str(high)):
        return None
    number = int(text)
    return number if low <= number <= high else None


def parse_limit(
    value: str | None,
    name: str = "limit",
    *,
    default: int = DEFAULT_LIMIT,
    maximum: int = MAX_LIMIT,
) -> int:
    if value is None:
        return default
    number = _bounded_int(value, 1, maximum)
    if number is None:
        raise _invalid(name, f"'{name}' must be an integer from 1 to {maximum}, not {value!r}.")
    return number


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
    number = _bounded_int(value.strip(), 0, MAX_SEQ)
    if number is None:
        raise _invalid(name, f"'{name}' must be an integer >= 0 and <= {MAX_SEQ}, not {value!r}.")
    return number
