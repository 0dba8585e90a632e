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

A Ctrl-C while the submit is still under way (or between the client's retries
of it) may come after the server accepted the task, with its id still on the
way back. So every submit carries an Idempotency-Key made beforehand: after
such a Ctrl-C the same submit again gets that task back (the server creates no
second one), or accepts it if the first never arrived, and then it is cancelled.

Everything the server sent goes through ``output.plain`` (or ``cell``) before it
is printed, whether or not the output is a terminal.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from aicli.console.hidden import warning
from aicli.console.output import assistant_parts, cell, plain, tool_line
from aicli.console.spinner import Spinner
from aicli.errors import AicliError, InvalidRequest

if TYPE_CHECKING:
    from aicli.client import Client
    from aicli.contract import Event, Task

# The exit status after Ctrl-C, as a shell gives a process that SIGINT ended (128 + 2).
INTERRUPTED = 130
# The model of the messages the CLI writes itself ("API Error: ..."): not Claude's words; a
# failed task's error says the same on stderr at the end.
SYNTHETIC = "<synthetic>"
STATES = {"pending": "waiting in the queue", "running": "running"}


class Runner:
    def __init__(self, client: Client, spinner: Spinner) -> None:
        self.client = client
        self.spinner = spinner
        # The submit, to repeat with its Idempotency-Key after a Ctrl-C that came before its answer.
        self.resubmit: Callable[[], Task] | None = None
        self.task_id: str | None = None
        self.streamed = False

    def say(self, stream: TextIO, text: str) -> None:
        """Through the spinner, so its line is cleared first; ``text`` may come from the server."""
        text = plain(text)
        self.spinner.write(stream, text if text.endswith("\n") else f"{text}\n")

    def note(self, text: str) -> None:
        self.say(sys.stderr, text)

    def run(self, args: argparse.Namespace) -> int:
        session_id = args.session or self._open(args)
        self.resubmit = functools.partial(
            self.client.submit,
            session_id,
            args.prompt,
            timeout_s=args.timeout_s,
            idempotency_key=uuid.uuid4().hex,
        )
        task = self.resubmit()
        self.task_id = task.id
        self.note(f"session {session_id} · task {task.id}")
        self.spinner.state = STATES.get(str(task.status), str(task.status))
        self.spinner.start()
        # Closed on the way out, so a Ctrl-C lets go of the stream before cancelling.
        with self.client.events(task.id) as events:
            for event in events:
                self.show(event)
        # events() returns only after the terminal status event (it raises otherwise).
        final = self.client.get_task(task.id)
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
            self.spinner.state = plain(STATES.get(str(data.get("status")), str(data.get("status"))))
        elif event.type == "assistant" and data.get("model") != SYNTHETIC:
            for kind, text in assistant_parts(data):
                if kind == "tool":
                    self.note(f"> {text}")
                elif plain(text):
                    self.say(sys.stdout, text)
                    self.streamed = True
        elif event.type == "approval_requested":
            approval = data.get("approval") or {}
            known = cell(str(approval.get("id")))
            what = tool_line(str(approval.get("tool_name")), approval.get("input"))
            verb = "answer" if approval.get("kind") == "question" else "allow|deny"
            self.note(f"? approval {known} asks for {what}: aicli approvals {verb} {known}")
            said = warning(approval.get("tool_name"), approval.get("input"))
            if said:
                self.note(f"aicli: warning: approval {known}: {said}")
            self.spinner.state = "waiting for approval"
        elif event.type == "approval_decided":
            approval = data.get("approval") or {}
            known, status = cell(str(approval.get("id"))), cell(str(approval.get("status")))
            self.note(f"approval {known}: {status}")
            self.spinner.state = "running"

    def finish(self, task: Task) -> int:
        status = str(task.status)
        if status == "completed":
            if not self.streamed and plain(task.output or ""):
                self.say(sys.stdout, task.output or "")
            return 0
        reason = f": {task.error}" if task.error else ""
        word = {"cancelled": "was cancelled", "failed": "failed"}.get(status, f"ended {status}")
        self.note(f"aicli: task {task.id} {word}{reason}")
        return 1

    def interrupted(self) -> int:
        def again(signum: int, frame: Any) -> None:
            try:
                self.spinner.stop()
            finally:
                os._exit(INTERRUPTED)

        signal.signal(signal.SIGINT, again)
        if self.resubmit is None:  # nothing submitted yet
            self.spinner.stop()
            return INTERRUPTED
        self.spinner.state = "cancelling (Ctrl-C again to exit at once)"
        try:
            if self.task_id is None:
                self.task_id = self.resubmit().id
            task = self.client.cancel(self.task_id)
        except AicliError as ex:
            self.spinner.stop()
            which = f"task {self.task_id}" if self.task_id else "the task being submitted"
            self.note(f"aicli: could not cancel {which}: {ex.message}")
            return INTERRUPTED
        self.spinner.stop()
        if str(task.status) == "cancelled":
            self.note(f"cancelled task {task.id}")
        else:
            self.note(f"task {task.id} had already {task.status}; not cancelled")
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
