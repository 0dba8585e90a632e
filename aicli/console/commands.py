"""``aicli sessions|tasks|approvals ...``: one call of the API each, printed plainly.

Lists are tab-separated under a header, one row per item; ``show`` and the
commands that change something print the item as ``field<TAB>value`` lines.
Errors are ``AicliError``s, which ``dispatch`` prints as ``aicli: <message>``
(exit 2).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from aicli.console import connect
from aicli.console.output import cell, shorten, show, table, tool_line, value_text
from aicli.errors import AicliError, InvalidRequest

if TYPE_CHECKING:
    from aicli.client import Client
    from aicli.contract import Approval, Event, Session, Task

INTERRUPTED = 130


def dispatch(args: argparse.Namespace) -> int:
    """Run one console command; ``aicli: <message>`` and 2 for an API error."""
    try:
        with connect.client(args) as client:
            if args.command == "run":
                from aicli.console.run import run

                return run(client, args)
            handler = HANDLERS[(args.command, args.action)]
            return handler(client, args)
    except AicliError as ex:
        print(f"aicli: {connect.explained(ex, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:  # `aicli tasks list | head`: the reader has what it wanted
        sys.stderr.close()
        return 0


def _limited(items: Iterator[Any], args: argparse.Namespace, noun: str) -> Iterable[Any]:
    """Every item with ``--all``; else at most ``--limit``, saying on stderr if more exist."""
    if getattr(args, "all", False):
        yield from items
        return
    yield from itertools.islice(items, args.limit)
    if next(items, None) is not None:
        print(f"(more {noun}: use --limit N or --all)", file=sys.stderr)


# Sessions


def sessions_list(client: Client, args: argparse.Namespace) -> int:
    status = args.status or (None if args.all else ["idle", "busy"])
    rows = (_session_row(s) for s in client.iter_sessions(status=status))
    header = ("ID", "STATUS", "WORKDIR", "APPROVALS", "TASKS", "COST_USD", "LAST_ACTIVE_AT")
    table(header, rows)
    return 0


def _session_row(session: Session) -> tuple[str, ...]:
    counts = session.task_counts
    tasks = (
        f"pending={counts.pending},running={counts.running},completed={counts.completed},"
        f"failed={counts.failed},cancelled={counts.cancelled}"
    )
    return (
        session.id,
        str(session.status),
        cell(session.workdir),
        str(session.approvals),
        tasks,
        f"{session.total_cost_usd:.4f}",
        value_text(session.last_active_at),
    )


def sessions_open(client: Client, args: argparse.Namespace) -> int:
    fields = {"workdir": _directory(args.workdir)}
    for name in ("approvals", "model", "permission_mode"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    show(client.open_session(**fields))
    return 0


def _directory(path: str) -> str:
    """An absolute path: the server resolves a relative one against its own directory."""
    import os

    return os.path.abspath(os.path.expanduser(path))


def sessions_show(client: Client, args: argparse.Namespace) -> int:
    show(client.get_session(args.id))
    return 0


def sessions_close(client: Client, args: argparse.Namespace) -> int:
    show(client.close_session(args.id))
    return 0


# Tasks


def tasks_list(client: Client, args: argparse.Namespace) -> int:
    found = client.iter_tasks(session_id=args.session, status=args.status)
    rows = (_task_row(task) for task in _limited(found, args, "tasks"))
    table(("ID", "SESSION", "STATUS", "CREATED_AT", "COST_USD", "COMMAND"), rows)
    return 0


def _task_row(task: Task) -> tuple[str, ...]:
    cost = "-" if task.cost_usd is None else f"{task.cost_usd:.4f}"
    return (
        task.id,
        task.session_id,
        str(task.status),
        value_text(task.created_at),
        cost,
        shorten(task.command, 60),
    )


def tasks_show(client: Client, args: argparse.Namespace) -> int:
    show(client.get_task(args.id))
    return 0


def tasks_cancel(client: Client, args: argparse.Namespace) -> int:
    task = client.cancel(args.id)
    if str(task.status) != "cancelled":  # it had ended already: the API's 409
        print(
            f"aicli: Task '{task.id}' is already {task.status} and cannot be cancelled.",
            file=sys.stderr,
        )
        return 2
    show(task)
    return 0


def tasks_events(client: Client, args: argparse.Namespace) -> int:
    for event in client.events(args.id):
        if args.json:
            line = msgspec.json.encode(event).decode()
        else:
            when = value_text(event.created_at)
            line = f"{event.seq}\t{when}\t{cell(event.type)}\t{event_summary(event)}"
        print(line, flush=True)
    return 0


def event_summary(event: Event) -> str:
    """One event's gist in one line: the text, the tool use, the status."""
    data = event.data if isinstance(event.data, dict) else {}
    if event.type == "status":
        error = data.get("error")
        return cell(str(data.get("status"))) + (f": {shorten(str(error))}" if error else "")
    if event.type == "assistant":
        parts = []
        for block in data.get("content") or []:
            if block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_use":
                parts.append(f"> {tool_line(str(block.get('name')), block.get('input'))}")
        return shorten(" ".join(parts), 120)
    if event.type in ("approval_requested", "approval_decided"):
        approval = data.get("approval") or {}
        fields = ("id", "status", "tool_name")
        return " ".join(f"{k}={cell(str(approval[k]))}" for k in fields if approval.get(k))
    if event.type == "result":
        return shorten(str(data.get("result") or data.get("subtype") or ""), 120)
    return shorten(json.dumps(data, ensure_ascii=False, separators=(",", ":")), 120)


# Approvals


def approvals_list(client: Client, args: argparse.Namespace) -> int:
    found = client.iter_approvals(session_id=args.session, task_id=args.task, status=args.status)
    rows = (_approval_row(a) for a in _limited(found, args, "approvals"))
    table(("ID", "TASK", "STATUS", "KIND", "TOOL", "INPUT", "CREATED_AT"), rows)
    return 0


def _approval_row(approval: Approval) -> tuple[str, ...]:
    summary = tool_line(approval.tool_name or "", approval.input)
    return (
        approval.id,
        approval.task_id,
        str(approval.status),
        str(approval.kind),
        cell(approval.tool_name or "-"),
        summary.partition(": ")[2] or "-",
        value_text(approval.created_at),
    )


def approvals_show(client: Client, args: argparse.Namespace) -> int:
    show(client.get_approval(args.id))
    return 0


def approvals_allow(client: Client, args: argparse.Namespace) -> int:
    show(client.decide(args.id, "allow", message=args.message, remember=args.remember))
    return 0


def approvals_deny(client: Client, args: argparse.Namespace) -> int:
    show(client.decide(args.id, "deny", message=args.message))
    return 0


def approvals_answer(client: Client, args: argparse.Namespace) -> int:
    answers = {}
    for given in args.answers:
        question, equals, answer = given.rpartition("=")
        if not equals or not question.strip():
            raise InvalidRequest(f"An answer must read QUESTION=ANSWER, not {given!r}.")
        answers[question] = answer
    show(client.decide(args.id, "allow", answers=answers))
    return 0


HANDLERS = {
    ("sessions", "list"): sessions_list,
    ("sessions", "open"): sessions_open,
    ("sessions", "show"): sessions_show,
    ("sessions", "close"): sessions_close,
    ("tasks", "list"): tasks_list,
    ("tasks", "show"): tasks_show,
    ("tasks", "cancel"): tasks_cancel,
    ("tasks", "events"): tasks_events,
    ("approvals", "list"): approvals_list,
    ("approvals", "show"): approvals_show,
    ("approvals", "allow"): approvals_allow,
    ("approvals", "deny"): approvals_deny,
    ("approvals", "answer"): approvals_answer,
}
