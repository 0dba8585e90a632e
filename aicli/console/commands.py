"""``aicli sessions|tasks|approvals ...``: one call of the API each, printed plainly.

Lists are tab-separated under a header, one row per item; ``show`` and the
commands that change something print the item as ``field<TAB>value`` lines.
Errors are ``AicliError``s, which ``dispatch`` prints as ``aicli: <message>``
(exit 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from aicli.console import connect
from aicli.console.hidden import revealed, unveiled, visible, warning
from aicli.console.output import (
    assistant_parts,
    cell,
    json_line,
    plain,
    shorten,
    show,
    table,
    tool_line,
    value_text,
)
from aicli.console.run import INTERRUPTED, run
from aicli.contract import MAX_LIMIT
from aicli.errors import AicliError, InvalidRequest, TaskNotCancellable

if TYPE_CHECKING:
    from aicli.client import Client
    from aicli.contract import Approval, Event, Session, Task


def dispatch(args: argparse.Namespace) -> int:
    try:
        with connect.client(args) as client:
            if args.command == "run":
                return run(client, args)
            handler = HANDLERS[(args.command, args.action)]
            return handler(client, args)
    except AicliError as ex:  # its message may be the server's words
        print(f"aicli: {plain(connect.explained(ex, args))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:  # `aicli tasks list | head`: the reader has what it wanted
        sys.stderr.close()
        return 0


def _limited(
    list_page: Callable[..., Any], args: argparse.Namespace, noun: str, **filters: Any
) -> Iterator[Any]:
    """The pages of ``list_page`` up to ``--limit`` (or all with ``--all``), one at a time.

    A page holds at most one more item than is still wanted, so ``--limit 1`` reads
    two rows, not a full page, and that one more says whether to note on stderr that
    more exist.
    """
    wanted = None if args.all else args.limit
    cursor = None
    while True:
        size = MAX_LIMIT if wanted is None else min(wanted + 1, MAX_LIMIT)
        page = list_page(limit=size, cursor=cursor, **filters)
        if wanted is not None:
            yield from page.data[:wanted]
            if len(page.data) > wanted or (page.has_more and len(page.data) == wanted):
                print(f"(more {noun}: use --limit N or --all)", file=sys.stderr)
                return
            wanted -= len(page.data)
        else:
            yield from page.data
        if not page.has_more:
            return
        cursor = page.next_cursor


# Sessions


def sessions_list(client: Client, args: argparse.Namespace) -> int:
    status = args.status or (None if args.all else ["idle", "busy"])
    found = _limited(client.list_sessions, args, "sessions", status=status)
    rows = (_session_row(s) for s in found)
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
    return os.path.abspath(os.path.expanduser(path))


def sessions_show(client: Client, args: argparse.Namespace) -> int:
    show(client.get_session(args.id))
    return 0


def sessions_close(client: Client, args: argparse.Namespace) -> int:
    show(client.close_session(args.id))
    return 0


# Tasks


def tasks_list(client: Client, args: argparse.Namespace) -> int:
    found = _limited(client.list_tasks, args, "tasks", session_id=args.session, status=args.status)
    rows = (_task_row(task) for task in found)
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
    if str(task.status) != "cancelled":  # it had ended already: the API's 409, in its words
        raise TaskNotCancellable(task.id, str(task.status))
    show(task)
    return 0


def tasks_events(client: Client, args: argparse.Namespace) -> int:
    with client.events(args.id) as events:
        for event in events:
            if args.json:
                line = json_line(msgspec.json.encode(event).decode())
            else:
                when = value_text(event.created_at)
                line = f"{event.seq}\t{when}\t{cell(event.type)}\t{event_summary(event)}"
            print(line, flush=True)
    return 0


def event_summary(event: Event) -> str:
    data = event.data if isinstance(event.data, dict) else {}
    if event.type == "status":
        error = data.get("error")
        return cell(str(data.get("status"))) + (f": {shorten(str(error))}" if error else "")
    if event.type == "assistant":
        parts = [text if kind == "text" else f"> {text}" for kind, text in assistant_parts(data)]
        return shorten(" ".join(parts), 120)
    if event.type in ("approval_requested", "approval_decided"):
        approval = data.get("approval") or {}
        fields = ("id", "status", "tool_name")
        return " ".join(f"{k}={cell(visible(str(approval[k])))}" for k in fields if approval.get(k))
    if event.type == "result":
        return shorten(str(data.get("result") or data.get("subtype") or ""), 120)
    return shorten(json.dumps(data, ensure_ascii=False, separators=(",", ":")), 120)


# Approvals


def approvals_list(client: Client, args: argparse.Namespace) -> int:
    found = _limited(
        client.approvals,
        args,
        "approvals",
        session_id=args.session,
        task_id=args.task,
        status=args.status,
    )
    warnings: list[str] = []

    def row(approval: Approval) -> tuple[str, ...]:
        said = hidden_warning(approval)
        if said:
            warnings.append(said)
        return _approval_row(approval)

    table(("ID", "TASK", "STATUS", "KIND", "TOOL", "INPUT", "CREATED_AT"), map(row, found))
    for said in warnings:  # after the table, which stderr would otherwise cut into
        print(said, file=sys.stderr)
    return 0


def hidden_warning(approval: Approval) -> str | None:
    """``aicli: warning: ...`` when what Claude proposed holds hidden characters."""
    said = warning(approval.tool_name, approval.input, approval.suggestions)
    return f"aicli: warning: approval {cell(approval.id)}: {said}" if said else None


def show_approval(approval: Approval) -> None:
    """``show``, with every string Claude proposed made visible (``<U+XXXX>``), and the
    warning on stderr when it holds hidden characters: a person decides on what this prints."""
    show(
        msgspec.structs.replace(
            approval,
            tool_name=visible(approval.tool_name),
            input=revealed(approval.input),
            suggestions=revealed(approval.suggestions),
            message=None if approval.message is None else visible(approval.message),
        )
    )
    said = hidden_warning(approval)
    if said:
        print(said, file=sys.stderr)


def _approval_row(approval: Approval) -> tuple[str, ...]:
    summary = tool_line(approval.tool_name or "", approval.input)
    return (
        approval.id,
        approval.task_id,
        str(approval.status),
        str(approval.kind),
        cell(visible(approval.tool_name) or "-"),
        summary.partition(": ")[2] or "-",
        value_text(approval.created_at),
    )


def approvals_show(client: Client, args: argparse.Namespace) -> int:
    show_approval(client.get_approval(args.id))
    return 0


def approvals_allow(client: Client, args: argparse.Namespace) -> int:
    show_approval(client.decide(args.id, "allow", message=args.message, remember=args.remember))
    return 0


def approvals_deny(client: Client, args: argparse.Namespace) -> int:
    show_approval(client.decide(args.id, "deny", message=args.message))
    return 0


def approvals_answer(client: Client, args: argparse.Namespace) -> int:
    answers = {}
    for given in args.answers:
        question, equals, answer = given.rpartition("=")
        if not equals or not question.strip():
            raise InvalidRequest(f"An answer must read QUESTION=ANSWER, not {given!r}.")
        answers[unveiled(question)] = unveiled(answer)  # typed as shown: <U+XXXX>
    asked = _questions(client.get_approval(args.id).input)
    for question in answers:
        if asked and question not in asked:
            # The server says so too, but with Python's escapes (\u200b), not as the
            # question was shown here and is to be typed (<U+200B>).
            raise InvalidRequest(
                f"No question {visible(question)!r} was asked; asked: "
                + "; ".join(repr(visible(text)) for text in asked)
                + "."
            )
    show_approval(client.decide(args.id, "allow", answers=answers))
    return 0


def _questions(given: Any) -> list[str]:
    """The texts of the questions a question approval's ``input`` asks."""
    asked = given.get("questions") if isinstance(given, dict) else None
    return [
        q["question"]
        for q in (asked if isinstance(asked, list) else [])
        if isinstance(q, dict) and isinstance(q.get("question"), str)
    ]


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
