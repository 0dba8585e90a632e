"""The running task of a session actor, on the process generation that runs it.

A turn's ``timeout_s`` counts only the time Claude works: while a request
waits for a person the clock is paused, and it goes on from where it stopped
once the last one is answered. Each restart of the clock gets a new token, so
a timer set before a pause that fires late is recognised and ignored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pykka

from aicli.actors.messages import TaskDeadline
from aicli.actors.scheduler import Scheduler, Timer
from aicli.actors.stream import Outcome
from aicli.contract import Task

SERVER_SHUTDOWN = "The server shut down while this task ran; the Claude turn was interrupted."


@dataclass
class Turn:
    task: Task
    generation: int
    started: float
    # The status and error we interrupted the turn with (a cancel, a close, a shutdown, a
    # timeout): the task ends so unless Claude completes it first. None: Claude decides.
    interrupted_as: tuple[str, str] | None = None
    outcome: Outcome | None = None  # how the turn ended, once decided; committed next
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    # The CLI's request id of each approval still pending, by approval id.
    waiting: dict[str, str] = field(default_factory=dict)
    # The timeout's clock: seconds of work left, when it last started, its timer and token.
    work_left: float | None = None
    clock_from: float = 0.0
    clock_timer: Timer | None = None
    clock_token: int = 0

    def cancel_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        if self.clock_timer is not None:
            self.clock_timer.cancel()
            self.clock_timer = None

    def start_clock(self, scheduler: Scheduler, ref: pykka.ActorRef[Any]) -> None:
        """Count the task's timeout from now, for the work it has left (none: no timeout)."""
        if self.work_left is None or self.clock_timer is not None:
            return
        self.clock_from = time.monotonic()
        self.clock_token += 1
        self.clock_timer = scheduler.tell_later(
            max(0.0, self.work_left), ref, TaskDeadline(self.task.id, "timeout", self.clock_token)
        )

    def pause_clock(self) -> None:
        if self.clock_timer is None:
            return
        self.clock_timer.cancel()
        self.clock_timer = None
        assert self.work_left is not None
        self.work_left -= time.monotonic() - self.clock_from

    def timed_out(self, deadline: TaskDeadline) -> bool:
        """Whether ``deadline`` is the live clock's: not one set before a pause."""
        return deadline.token == self.clock_token and self.clock_timer is not None
