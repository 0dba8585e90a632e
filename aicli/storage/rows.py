"""Driver rows to the structs of ``aicli.contract``, and struct fields to stored values.

A task's columns are its struct's fields (less those computed on the way out,
like ``queue_position``), in the struct's order, so a new field of the task
object needs a column (a migration) and nothing here. Each column's converter
is chosen once from the field's type: times and JSON are parsed the cheap way
(see ``fields``), enums looked up, the rest passed through. A page of tasks
converts 50 rows of 15 columns, so the per-row work is one list comprehension
and a positional struct call.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from aicli.contract import (
    ApprovalMode,
    ApprovalRule,
    Event,
    PermissionMode,
    Session,
    SessionStatus,
    Task,
    TaskCounts,
    TaskStatus,
    Usage,
)
from aicli.storage.fields import from_db_time, from_json_text, to_db_float, to_json_text

# Task fields a row does not hold: the runtime fills them in.
TASK_COMPUTED = frozenset({"queue_position"})


def _time(value: Any) -> Any:
    return None if value is None else from_db_time(value)


_usage_from_json = msgspec.json.Decoder(Usage).decode


def _usage(value: Any) -> Usage | None:
    return None if value is None else _usage_from_json(value)


def _reader(kind: Any) -> Callable[[Any], Any] | None:
    """How a stored value becomes a field of type ``kind`` (None: as it is)."""
    union = typing.get_origin(kind) in (typing.Union, types.UnionType)
    options = typing.get_args(kind) if union else (kind,)
    for option in options:
        if option is datetime:
            return _time
        if option is Usage:
            return _usage
        if isinstance(option, type) and issubclass(option, TaskStatus | SessionStatus):
            return option
        if option is dict or typing.get_origin(option) is dict:
            return from_json_text
    return None


def _builder(kind: type, computed: frozenset[str]) -> tuple[str, Callable[[Sequence[Any]], Any]]:
    """The columns of ``kind``, and a function from a row of them to a ``kind``.

    The function is written out once (``kind(read_1(row[0]), row[1], None, ...)``):
    a loop that looks up each field's reader per row cost a page of 50 tasks a
    third more than the database work.
    """
    hints = typing.get_type_hints(kind)
    columns: list[str] = []
    readers: dict[str, Any] = {"kind": kind}
    arguments = []
    for name in kind.__struct_fields__:
        if name in computed:
            arguments.append("None")
            continue
        read = _reader(hints[name])
        at = f"row[{len(columns)}]"
        columns.append(name)
        if read is None:
            arguments.append(at)
        else:
            readers[f"read_{name}"] = read
            arguments.append(f"read_{name}({at})")
    namespace: dict[str, Any] = {}
    source = f"def from_row(row):\n    return kind({', '.join(arguments)})\n"
    exec(compile(source, f"<{kind.__name__} from a row>", "exec"), readers, namespace)  # noqa: S102
    return ", ".join(columns), namespace["from_row"]


TASK_COLUMNS, task_from_row = _builder(Task, TASK_COMPUTED)
# A page of tasks from SQLite as one JSON array of rows: the driver then steps
# once, not once a row, and each step lets go of the GIL, which with a dozen
# requests at once cost more than the rows themselves (a page of 50 served at a
# third of the rate it had with one request at a time). JSON writes a REAL with
# 15 digits, which is why floats are stored rounded to 15 (``to_db_float``).
TASK_JSON_ROW = f"json_array({TASK_COLUMNS})"
EVENT_COLUMNS = "seq, type, created_at, data"
SESSION_COLUMNS = (
    "id, status, workdir, model, permission_mode, allowed_tools, disallowed_tools,"
    " append_system_prompt, max_turns, metadata, claude_session_id, created_at, updated_at,"
    " last_active_at, n_pending, n_running, n_completed, n_failed, n_cancelled, total_cost_usd,"
    " owner, approvals, approval_timeout_s, approval_rules, owner_node, network_domains,"
    " read_paths, tools"
)
_rules_from_json = msgspec.json.Decoder(tuple[ApprovalRule, ...]).decode


def rules_from_json(text: str) -> tuple[ApprovalRule, ...]:
    return () if text == "[]" else _rules_from_json(text)


def stored_value(value: Any) -> Any:
    """A request field as its column holds it: structured values as JSON text, floats
    to the digits text keeps (``fields.to_db_float``)."""
    if isinstance(value, dict | list | tuple | msgspec.Struct):
        return to_json_text(msgspec.to_builtins(value))
    if isinstance(value, float):
        return to_db_float(value)
    return value


def session_from_row(row: Sequence[Any]) -> Session:
    (
        session_id, status, workdir, model, permission_mode, allowed_tools, disallowed_tools,
        append_system_prompt, max_turns, metadata, claude_session_id, created_at, updated_at,
        last_active_at, n_pending, n_running, n_completed, n_failed, n_cancelled, total_cost_usd,
        owner, approvals, approval_timeout_s, approval_rules, owner_node, network_domains,
        read_paths, tools,
    ) = row  # fmt: skip
    return Session(
        id=session_id,
        status=SessionStatus(status),
        workdir=workdir,
        model=model,
        permission_mode=None if permission_mode is None else PermissionMode(permission_mode),
        allowed_tools=tuple(from_json_text(allowed_tools)),
        disallowed_tools=tuple(from_json_text(disallowed_tools)),
        append_system_prompt=append_system_prompt,
        max_turns=max_turns,
        metadata=from_json_text(metadata),
        approvals=ApprovalMode(approvals),
        approval_timeout_s=approval_timeout_s,
        approval_rules=rules_from_json(approval_rules),
        claude_session_id=claude_session_id,
        owner=owner,
        network_domains=tuple(from_json_text(network_domains)),
        read_paths=tuple(from_json_text(read_paths)),
        tools=None if tools is None else tuple(from_json_text(tools)),
        node=owner_node,
        created_at=from_db_time(created_at),
        updated_at=from_db_time(updated_at),
        last_active_at=_time(last_active_at),
        task_counts=TaskCounts(
            pending=n_pending,
            running=n_running,
            completed=n_completed,
            failed=n_failed,
            cancelled=n_cancelled,
        ),
        total_cost_usd=total_cost_usd,
    )


def event_from_row(row: Sequence[Any]) -> Event:
    seq, kind, created_at, data = row
    return Event(seq=seq, type=kind, created_at=from_db_time(created_at), data=from_json_text(data))
