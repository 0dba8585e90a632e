"""The argparse declarations of the terminal client's commands.

Imported by ``aicli.cli`` when it builds its parser, so it imports only
``argparse``: the HTTP client is loaded when a command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"
# The top-level commands this package runs (``aicli.cli`` dispatches them here).
COMMANDS = frozenset({"run", "sessions", "tasks", "approvals"})


def _connection() -> argparse.ArgumentParser:
    """No ``--token``: a command line is visible to every user of the machine (``ps``)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("server")
    group.add_argument(
        "--url",
        default=None,
        metavar="URL",
        help=f"The aicli server (env AICLI_URL; default: {DEFAULT_URL}).",
    )
    group.add_argument(
        "--token-file",
        default=None,
        metavar="FILE",
        help="Read the bearer token from this file (else env AICLI_TOKEN, if set).",
    )
    return parent


def _statuses(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _status_option(parser: argparse.ArgumentParser, choices: str) -> None:
    parser.add_argument(
        "--status",
        type=_statuses,
        action="extend",
        default=None,
        metavar="S",
        help=f"Only these statuses (a comma list, or the flag again): {choices}.",
    )


def _paging(parser: argparse.ArgumentParser, noun: str, every: str | None = None) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--limit", type=_positive, default=50, metavar="N", help=f"At most N {noun} (default 50)."
    )
    group.add_argument("--all", action="store_true", help=every or f"Every {noun[:-1]}, all pages.")


def add_commands(commands: Any) -> None:
    connection = _connection()
    _run_command(commands, connection)
    _session_commands(commands, connection)
    _task_commands(commands, connection)
    _approval_commands(commands, connection)


def _run_command(commands: Any, connection: argparse.ArgumentParser) -> None:
    run = commands.add_parser(
        "run",
        parents=[connection],
        help="Run a prompt in a session and print Claude's answer as it streams.",
        description=(
            "Open a session in DIR (default: the current directory), or use --session, "
            "submit PROMPT and print Claude's text to stdout as it arrives; tool uses and "
            "progress go to stderr. Exit 0 if the task completed, 1 if it failed, 130 after "
            "Ctrl-C (which cancels the task)."
        ),
    )
    where = run.add_mutually_exclusive_group()
    where.add_argument("--session", metavar="ID", help="Run in this open session.")
    where.add_argument("--workdir", metavar="DIR", help="Open a new session in DIR.")
    run.add_argument(
        "--approvals",
        choices=("ask", "off"),
        default=None,
        help="For a new session: ask a person before tools run (see `aicli approvals`).",
    )
    run.add_argument(
        "--timeout-s", type=float, default=None, metavar="S", help="Fail the task after S seconds."
    )
    run.add_argument("prompt", help="What to ask Claude.")


def _session_commands(commands: Any, connection: argparse.ArgumentParser) -> None:
    sessions = commands.add_parser("sessions", help="List, open, show and close sessions.")
    actions = sessions.add_subparsers(dest="action", required=True)
    listing = actions.add_parser(
        "list", parents=[connection], help="List sessions: the open ones, unless --status or --all."
    )
    _status_option(listing, "idle, busy, closed")
    _paging(listing, "sessions", every="Every session, closed ones too, all pages.")
    opening = actions.add_parser("open", parents=[connection], help="Open a session in DIR.")
    opening.add_argument("workdir", metavar="DIR", help="Its working directory.")
    opening.add_argument("--approvals", choices=("ask", "off"), default=None)
    opening.add_argument("--model", default=None, help="Passed to Claude as --model.")
    opening.add_argument(
        "--permission-mode",
        choices=("default", "acceptEdits", "plan", "bypassPermissions"),
        default=None,
    )
    for name, text in (("show", "Show one session."), ("close", "Close a session.")):
        action = actions.add_parser(name, parents=[connection], help=text)
        action.add_argument("id", help="The session's id.")


def _task_commands(commands: Any, connection: argparse.ArgumentParser) -> None:
    tasks = commands.add_parser("tasks", help="List, show and cancel tasks; follow their events.")
    actions = tasks.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", parents=[connection], help="List tasks, newest first.")
    listing.add_argument("--session", metavar="ID", default=None, help="Only this session's.")
    _status_option(listing, "pending, running, completed, failed, cancelled")
    _paging(listing, "tasks")
    for name, text in (
        ("show", "Show one task."),
        ("cancel", "Cancel a pending or running task."),
        ("events", "Print a task's events and follow them live until it ends."),
    ):
        action = actions.add_parser(name, parents=[connection], help=text)
        action.add_argument("id", help="The task's id.")
        if name == "events":
            action.add_argument("--json", action="store_true", help="Each event as a JSON line.")


def _approval_commands(commands: Any, connection: argparse.ArgumentParser) -> None:
    approvals = commands.add_parser(
        "approvals", help="List approval requests and decide them (allow, deny, answer)."
    )
    actions = approvals.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", parents=[connection], help="List approval requests.")
    _status_option(listing, "pending, allowed, denied, expired")
    listing.add_argument("--session", metavar="ID", default=None, help="Only this session's.")
    listing.add_argument("--task", metavar="ID", default=None, help="Only this task's.")
    _paging(listing, "approvals")
    show = actions.add_parser("show", parents=[connection], help="Show one approval request.")
    show.add_argument("id", help="The approval's id.")
    allow = actions.add_parser("allow", parents=[connection], help="Let the tool run.")
    allow.add_argument("id", help="The approval's id.")
    allow.add_argument(
        "--remember",
        action="store_true",
        help="Also allow the same use for the rest of the session without asking.",
    )
    allow.add_argument("--message", default=None, metavar="M", help="A note for the record.")
    deny = actions.add_parser("deny", parents=[connection], help="Refuse the tool use.")
    deny.add_argument("id", help="The approval's id.")
    deny.add_argument("--message", default=None, metavar="M", help="Told to Claude.")
    answer = actions.add_parser(
        "answer", parents=[connection], help="Answer Claude's question (kind question)."
    )
    answer.add_argument("id", help="The approval's id.")
    answer.add_argument(
        "answers",
        nargs="+",
        metavar="QUESTION=ANSWER",
        help=(
            "The question's text, '=', and the chosen answer; one per question. A hidden "
            "character may be typed as shown: <U+200B>."
        ),
    )
