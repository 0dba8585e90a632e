"""``aicli run``: submit a prompt and print Claude's answer as its events stream in.

Claude's text goes to stdout, each message as it arrives; everything else
(the ids, one line per tool use, approval requests, errors, the spinner) goes
to stderr, so ``aicli run ... > answer.txt`` keeps only the answer. The
spinner is drawn only when stderr is a terminal: piped, the output is plain
text without a ``\\r`` or an escape sequence.

Exit status: 0 completed, 1 failed (or cancelled by someone else), 130 after
Ctrl-C, which cancels the task first; a second Ctrl-C exits at once. The
session stays open, so ``aicli run --session ID`` can go on with it (the server
stops idle Claude processes by itself).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from aicli.console.output import cell, tool_line
from aicli.console.spinner import Spinner
from aicli.errors import AicliError, InvalidRequest

if TYPE_CHECKING:
    from aicli.client import Client
    from aicli.contract import Event, Task

INTERRUPTED = 130
# The model of the messages the CLI writes itself ("API Error: ..."): not Claude's words; a
# failed task's error says the same on stderr at the end.
SYNTHETIC = "<synthetic>"
STATES = {"pending": "waiting in the queue", "running": "running"}


class Runner:
    def __init__(self, client: Client, spinner: Spinner) -> None:
        self.client = client
        self.spinner = spinner
        self.task_id: str | None = None
        self.streamed = False

    def note(self, text: str) -> None:
        """One line on stderr, below the spinner."""
        self.spinner.write(sys.stderr, f"{text}\n")

    def run(self, args: argparse.Namespace) -> int:
        session_id = args.session or self._open(args)
        task = self.client.submit(session_id, args.prompt, timeout_s=args.timeout_s)
        self.task_id = task.id
        self.note(f"session {session_id} · task {task.id}")
        self.spinner.state = STATES.get(str(task.status), str(task.status))
        self.spinner.start()
        for event in self.client.events(task.id):
            self.show(event)
        final = self.client.get_task(task.id)
        if not final.is_terminal:  # the stream ended early; the server says how it ends
            final = self.client.wait(task.id, 60)
        self.spinner.stop()
        return self.finish(final)

    def _open(self, args: argparse.Namespace) -> str:
        fields: dict[str, Any] = {"workdir": os.path.abspath(args.workdir or os.getcwd())}
        if args.approvals is not None:
            fields["approvals"] = args.approvals
        return self.client.open_session(**fields).id

    def show(self, event: Event) -> None:
        data = event.data
        if event.type == "status":
            self.spinner.state = STATES.get(str(data.get("status")), str(data.get("status")))
        elif event.type == "assistant" and data.get("model") != SYNTHETIC:
            for block in data.get("content") or []:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "text" and block.get("text"):
                    text = str(block["text"])
                    self.spinner.write(sys.stdout, text if text.endswith("\n") else f"{text}\n")
                    self.streamed = True
                elif block.get("type") == "tool_use":
                    self.note(f"> {tool_line(str(block.get('name')), block.get('input'))}")
        elif event.type == "approval_requested":
            approval = data.get("approval") or {}
            known = cell(str(approval.get("id")))
            what = tool_line(str(approval.get("tool_name")), approval.get("input"))
            verb = "answer" if approval.get("kind") == "question" else "allow|deny"
            self.note(f"? approval {known} asks for {what}: aicli approvals {verb} {known}")
            self.spinner.state = "waiting for approval"
        elif event.type == "approval_decided":
            approval = data.get("approval") or {}
            known, status = cell(str(approval.get("id"))), cell(str(approval.get("status")))
            self.note(f"approval {known}: {status}")
            self.spinner.state = "running"

    def finish(self, task: Task) -> int:
        status = str(task.status)
        if status == "completed":
            if not self.streamed and task.output:
                text = task.output
                sys.stdout.write(text if text.endswith("\n") else f"{text}\n")
                sys.stdout.flush()
            return 0
        reason = f": {task.error}" if task.error else ""
        word = "was cancelled" if status == "cancelled" else "failed"
        print(f"aicli: task {task.id} {word}{reason}", file=sys.stderr)
        return 1

    def interrupted(self) -> int:
        """Ctrl-C: cancel the task and say so; another Ctrl-C meanwhile exits at once."""

        def again(signum: int, frame: Any) -> None:
            self.spinner.stop()
            os._exit(INTERRUPTED)

        signal.signal(signal.SIGINT, again)
        if self.task_id is None:
            self.spinner.stop()
            return INTERRUPTED
        self.spinner.state = "cancelling (Ctrl-C again to exit at once)"
        try:
            task = self.client.cancel(self.task_id)
        except AicliError as ex:
            self.spinner.stop()
            print(f"aicli: could not cancel task {self.task_id}: {ex.message}", file=sys.stderr)
            return INTERRUPTED
        self.spinner.stop()
        if str(task.status) == "cancelled":
            print(f"cancelled task {task.id}", file=sys.stderr)
        else:
            print(f"task {task.id} had already {task.status}; not cancelled", file=sys.stderr)
        return INTERRUPTED


def run(client: Client, args: argparse.Namespace) -> int:
    if args.session and args.approvals:
        raise InvalidRequest("--approvals applies to a new session only, not to --session.")
    runner = Runner(client, Spinner.for_stream(sys.stderr))
    try:
        return runner.run(args)
    except KeyboardInterrupt:
        return runner.interrupted()
    finally:
        runner.spinner.stop()
