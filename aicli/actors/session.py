"""The session actor: one Claude conversation, its process, and the only taker from its queue.

The queue is the session's pending rows in the store: submits, cancels of
pending tasks and closes write there directly, and this actor is told to
``Advance``. It asks the store for the next task, which commits that task as
``running`` (the store decides what runs next and that nothing else of the
session runs), and only then sends its prompt. A crash at any point therefore
leaves either a pending task whose prompt was never sent or a running one that
the restart rule fails: never a prompt sent twice.

A turn belongs to one process generation. If anything goes wrong while a turn
is live (a handler raises, a commit fails), that process is killed, its late
messages are ignored, and the task fails with a clear error before anything
else runs; ``current`` is cleared only once the terminal state is committed.

The process's threads only ``tell`` this actor what the CLI wrote, and every
timer (task timeout, kill after a failed interrupt, idle stop, retry) is a
message from the one scheduler, so a handler never waits on the process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pykka

from aicli.actors.asking import AskingMixin
from aicli.actors.census import CENSUS_KEY, ProcessCensus
from aicli.actors.claude_env import session_environment
from aicli.actors.claude_process import ClaudeLike, ClaudeProcess, ProcessExit
from aicli.actors.faults import Faults
from aicli.actors.messages import (
    Advance,
    Answer,
    ApprovalDeadline,
    Cancel,
    Close,
    Drain,
    Evict,
    EvictRefused,
    Fence,
    IdleTimeout,
    ProcessBusy,
    ProcessExited,
    ProcessIdle,
    RetryFinish,
    SessionStopped,
    Shutdown,
    SlotGranted,
    SlotReleased,
    SlotRequested,
    StreamMessage,
    TaskDeadline,
    ToolsSwept,
)
from aicli.actors.node_lease import LeaseState
from aicli.actors.notifier import Notifier, events_of
from aicli.actors.sandbox import Launch, Sandbox
from aicli.actors.scheduler import Scheduler, Timer
from aicli.actors.session_dirs import session_dirs
from aicli.actors.stream import Outcome, event_of, outcome_of
from aicli.actors.transcript_sync import TranscriptSync
from aicli.actors.turn import SERVER_SHUTDOWN, Turn
from aicli.contract import ROOT_PRINCIPAL_ID, Session, Task, TaskStatus
from aicli.errors import (
    CredentialsUnavailable,
    IllegalTransition,
    NotOwner,
    StorageError,
    Unavailable,
)
from aicli.metrics import Metrics
from aicli.settings import Settings
from aicli.storage import Store
from aicli.workspace import outside_root

if TYPE_CHECKING:
    from aicli.actors.api_proxy import ApiProxy

log = logging.getLogger(__name__)

CANCELLED_PENDING = "Cancelled before it started."
CANCELLED_RUNNING = "Cancelled while running; the Claude turn was interrupted."
SESSION_CLOSED_PENDING = "The session was closed before this task started."
SESSION_CLOSED_RUNNING = "The session was closed while this task ran."
RETRY_S = 1.0

ProcessFactory = Callable[..., ClaudeLike]
OwnCredentials = Callable[[str | None], Mapping[str, str] | None]


def no_own_credentials(principal_id: str | None) -> Mapping[str, str] | None:
    """Every principal uses the operator's Anthropic credentials."""
    return None


@dataclass(frozen=True)
class ActorContext:
    """What every session actor shares with the runtime: built once, passed to each."""

    store: Store
    notifier: Notifier
    census: ProcessCensus
    metrics: Metrics
    settings: Settings
    scheduler: Scheduler
    faults: Faults
    claude_bin: str
    claude_env: Mapping[str, str]
    owner_prefix: str  # each process's mark: this, the node's id, and its own
    lease: LeaseState
    # A decision's answer from the store (one made on a peer whose word was lost).
    answer_of: Callable[[str], Answer | None]
    # The credential proxy every CLI reaches the Messages API through, with a token of its own.
    api_proxy: ApiProxy
    state_dir: str  # each session's own config, HOME and temp files on this node
    sandbox: Sandbox | None  # None: sessions run unsandboxed (``--sandbox off``)
    process_factory: ProcessFactory = ClaudeProcess
    # A principal's own Anthropic credentials (headers for the proxy), or None: the operator's.
    own_credentials: OwnCredentials = no_own_credentials


class SessionActor(AskingMixin, pykka.ThreadingActor):
    def __init__(
        self, session: Session, context: ActorContext, supervisor: pykka.ActorRef[Any]
    ) -> None:
        super().__init__()
        self.session_id = session.id
        self.session = session
        self.ctx = context
        self.store = context.store
        self.supervisor = supervisor
        self.current: Turn | None = None
        self.process: ClaudeLike | None = None
        self.generation = 0
        self.leaving = False  # this generation's process is being stopped or killed
        self.slot = "none"  # none -> requested -> held -> none
        self.closed = session.status == "closed"
        self.draining = False  # the server is stopping: start nothing new
        self.stopping = False  # this actor asked to stop; a new one takes over any new work
        # The store may show a task of this session running that no turn here owns: its
        # start committed, but the answer was lost, or a step after it failed. Look first.
        self.unsure = True
        self.passivating = False
        self.sweeping = False
        self.process_cost = 0.0
        self.idle_token = 0
        self.idle_timer: Timer | None = None
        self.retry_timer: Timer | None = None
        # This node's claim on the session (``ownership``): every write of ours names it.
        self.node_id: str | None = None
        self.epoch: int | None = None
        self.elsewhere = False  # another node holds the session now: let it go, write nothing
        self.fenced = False  # this node lost its lease: the database may not be reachable
        self.dirs = session_dirs(context.state_dir, session.id)
        self.api_token: str | None = None  # the live process's capability at the API proxy
        self.launch: Launch | None = None  # how the live process was sandboxed
        self.transcript = (
            TranscriptSync(
                self.store,
                session.id,
                {**os.environ, **context.claude_env, "CLAUDE_CONFIG_DIR": str(self.dirs.claude)},
            )
            if self.store.is_postgres  # several nodes: the conversation moves with the session
            else None
        )

    # Lifecycle

    def on_start(self) -> None:
        try:
            self._advance()
        except Exception as exc:
            log.exception("session %s: failed to start", self.session_id)
            self._after_failure(exc)

    def on_stop(self) -> None:
        for timer in (self.idle_timer, self.retry_timer):
            if timer is not None:
                timer.cancel()
        if self.current is not None:
            self.current.cancel_timers()
        if self.process is not None:
            if self.process.alive:
                self.process.kill()
            self._forget_process(self.process)
        # A turn still live keeps the claim: its task fails when this node's lease ends.
        if not self.fenced and self.current is None:
            self._release_claim()
        self.supervisor.tell(SessionStopped(self.session_id, self.actor_urn, self.elsewhere))

    # Tells

    def on_receive(self, message: Any) -> None:
        handler = self._handlers.get(type(message))
        if handler is None:
            super().on_receive(message)
            return
        try:
            handler(self, message)
        except NotOwner:
            self._let_go("another node took it over")
        except Exception as exc:
            kind = type(message).__name__
            if isinstance(exc, StorageError | Unavailable):  # an outage, not a bug of ours
                log.warning("session %s: %s while handling %s", self.session_id, exc, kind)
            else:
                log.exception("session %s: failed to handle %s", self.session_id, kind)
            self._after_failure(exc)

    def _on_advance(self, _: Advance) -> None:
        self._advance(likely=True)

    def _on_cancel(self, message: Cancel) -> None:
        if self.current is not None and self.current.task.id == message.task_id:
            self._end_running(TaskStatus.CANCELLED, CANCELLED_RUNNING)

    def _on_close(self, _: Close) -> None:
        self.closed = True
        if self.current is not None:
            self._end_running(TaskStatus.CANCELLED, SESSION_CLOSED_RUNNING)
        self._stop_process()
        self._stop_if_done()

    def _on_drain(self, _: Drain) -> None:
        self.draining = True
        if self.current is not None and self.current.waiting:
            # Nobody will be there to answer: the turn ends now, not at the end of the grace.
            self._end_running(TaskStatus.CANCELLED, SERVER_SHUTDOWN)

    def _on_fence(self, _: Fence) -> None:
        """This node may no longer act for the session: its process dies, nothing is written.

        A peer fails the running task once the lease has run out, and runs the rest."""
        self.fenced = True
        self._let_go("this node lost its lease")

    def _on_shutdown(self, _: Shutdown) -> None:
        self.draining = True
        if self.current is not None:
            self._end_running(TaskStatus.CANCELLED, SERVER_SHUTDOWN)
        self._stop_process()

    def _on_stream(self, message: StreamMessage) -> None:
        if message.generation != self.generation or self.leaving or self._lease_gone():
            return
        data = message.message
        kind = data.get("type")
        if kind == "system" and data.get("subtype") == "init":
            self._learn_claude_session(data.get("session_id"))
            return
        if kind == "control_request":
            self._on_control_request(data)
            return
        if kind == "control_cancel_request":
            self._forget_request(str(data.get("request_id")))
            return
        turn = self.current
        if turn is None or turn.generation != message.generation or turn.outcome is not None:
            return
        event = event_of(data)
        if data.get("type") == "result":
            self._learn_claude_session(data.get("session_id"))
            outcome = outcome_of(data, self.process_cost)
            total = data.get("total_cost_usd")
            if total is not None:
                self.process_cost = float(total)
            self._conclude(outcome, [event] if event else [])
        elif event is not None:
            self.ctx.faults.reach("stream.event")
            self.store.append_events(turn.task.id, [event], epoch=self.epoch)
            self.ctx.notifier.announce(events_of(turn.task.id))

    def _on_exit(self, message: ProcessExited) -> None:
        if message.generation != self.generation:
            return
        process, self.process = self.process, None
        self.leaving = False
        self._release_slot()
        if process is not None:
            self._forget_process(process)
        turn = self.current
        if turn is not None and turn.generation == message.generation and turn.outcome is None:
            self._conclude(Outcome.failure(message.exit.describe()))
        self._stop_if_done()
        self._advance()

    def _on_retry_finish(self, _: RetryFinish) -> None:
        if self.current is not None and self.current.outcome is not None:
            self._commit_end()

    def _on_tools_swept(self, _: ToolsSwept) -> None:
        self.sweeping = False
        self._advance()

    def _on_slot_granted(self, _: SlotGranted) -> None:
        self.slot = "held"
        if self.closed or self.draining or not self.store.has_pending(self.session_id):
            self._release_slot()
            self._became_idle()
            return
        self._advance()

    def _on_evict(self, _: Evict) -> None:
        if self.current is None and self.process is not None:
            self._stop_process()
        elif self.current is None and self.slot == "held":
            self._release_slot()
        else:
            self.supervisor.tell(EvictRefused(self.session_id))

    def _on_deadline(self, message: TaskDeadline) -> None:
        turn = self.current
        if turn is None or turn.task.id != message.task_id or turn.outcome is not None:
            return
        if message.kind == "timeout":
            if not turn.timed_out(message):
                return  # set before the clock paused for a person; a new one is running
            limit = turn.task.timeout_s or 0
            self._end_running(
                TaskStatus.FAILED, f"Timed out after {limit:g} s; the Claude turn was interrupted."
            )
        elif message.kind == "kill" and self.process is not None:
            log.warning("session %s: turn did not end after interrupt; killing", self.session_id)
            self._kill_process()

    def _on_idle(self, message: IdleTimeout) -> None:
        """Idle for the whole timeout: stop the process, then this actor, until needed again."""
        if message.token != self.idle_token or self.current is not None:
            return
        self.idle_timer = None
        self.passivating = True
        if self.process is not None:
            log.info("session %s: stopping its idle Claude process", self.session_id)
            self._stop_process()
        self._stop_if_done()

    _handlers: dict[type, Callable[[SessionActor, Any], None]] = {
        Advance: _on_advance,
        Cancel: _on_cancel,
        Close: _on_close,
        Drain: _on_drain,
        Shutdown: _on_shutdown,
        Fence: _on_fence,
        StreamMessage: _on_stream,
        ProcessExited: _on_exit,
        RetryFinish: _on_retry_finish,
        ToolsSwept: _on_tools_swept,
        SlotGranted: _on_slot_granted,
        Evict: _on_evict,
        TaskDeadline: _on_deadline,
        IdleTimeout: _on_idle,
        Answer: AskingMixin._on_answer,
        ApprovalDeadline: AskingMixin._on_approval_deadline,
    }

    # Starting tasks

    def _advance(self, *, likely: bool = False) -> None:
        """Start the session's next task, if the store has one and nothing runs.

        ``likely``: told there is work (a submit's wake), so a live process skips
        the look and takes straight away; taking nothing is no error.
        """
        if self.current is not None or self.sweeping or self.stopping:
            return
        if self.closed or self.draining:
            return
        if self.process is not None and (self.leaving or not self.process.usable):
            return  # on its way out; its exit calls us again
        # A read first: taking nothing would cost a write transaction, and most turns end so.
        if (self.process is None or not likely) and not self.store.has_pending(self.session_id):
            if self.unsure and self.epoch is not None:
                self._settle_orphan()
            self._became_idle()
            return
        if self.process is None:
            self._not_idle()
            if self.slot == "none":
                self.slot = "requested"
                self.supervisor.tell(SlotRequested(self.session_id))
                return
            if self.slot == "requested":
                return
        # A slot is ours: now the session, unless another node runs it.
        if not self._claimed() or (self.unsure and self._settle_orphan()):
            return
        spent = self._budget_spent()
        if spent is not None:
            self._fail_unrun(spent)
            return
        moved = self._workdir_problem()
        if moved is not None:
            self._refuse_moved_workdir(moved)
            return
        if self.process is None and not self._spawn():
            return
        self._start_next()

    def _claimed(self) -> bool:
        """Whether this node holds the session, claiming it first if need be.

        Not claimed here: while this node has no lease (try again soon), while
        another live node holds it, or when its workdir is missing on this node
        while other nodes could run it (workdirs live on storage every node sees).
        """
        node = self.ctx.lease.node
        if self.epoch is not None:
            if node is not None and node.id == self.node_id:
                return True
            self._let_go("this node's lease is gone")
            return False
        if node is None:
            self._retry(Advance())
            return False
        if not os.path.isdir(self.session.workdir) and len(self.store.nodes.live()) > 1:
            log.warning(
                "session %s: workdir %s is missing on this node; leaving it to the others",
                self.session_id,
                self.session.workdir,
            )
            self._let_go("its workdir is missing here")
            return False
        epoch = self.store.ownership.claim(self.session_id, node.id)
        if epoch is None:
            self._let_go("another node runs it")
            return False
        self.node_id, self.epoch = node.id, epoch
        return True

    def _lease_gone(self) -> bool:
        """Whether the lease this actor's claim was taken under is gone (by this node's
        clock, even before its fence ran: the server may just have woken up past it); if
        so it lets go, continuing nothing of the turn."""
        if self.epoch is None:
            return False
        node = self.ctx.lease.node
        if node is not None and node.id == self.node_id:
            return False
        self._let_go("this node's lease is gone")
        return True

    def _let_go(self, why: str) -> None:
        """Another node runs the session (or must): stop here without writing for it."""
        log.info("session %s: letting go here (%s)", self.session_id, why)
        self.elsewhere = True
        self.epoch = None
        if self.current is not None:
            self.current.cancel_timers()
            self.current = None
        if self.process is not None and not self.leaving:
            self._kill_process()
        self.stopping = True
        self._release_slot()
        self.stop()

    def _release_claim(self) -> None:
        """Best effort: a claim not released ends with this node's lease."""
        if self.epoch is None or self.node_id is None:
            return
        try:
            self.store.ownership.release(self.session_id, self.node_id, self.epoch)
        except (StorageError, Unavailable) as exc:
            log.warning("session %s: could not let go of its claim: %s", self.session_id, exc)
        self.epoch = None

    def _start_next(self) -> None:
        """Record, then dispatch: the prompt goes out only after ``running`` is committed."""
        assert self.process is not None
        self.ctx.faults.reach("start.before_commit")
        task = self.store.start_next_task(self.session_id, epoch=self.epoch)
        if task is None:
            self._became_idle()
            return
        self.current = turn = Turn(
            task, self.generation, time.monotonic(), work_left=task.timeout_s or None
        )
        self._not_idle()
        announce(self.ctx, task)
        self.ctx.faults.reach("start.after_commit")
        self.process.send_prompt(task.command)
        self.supervisor.tell(ProcessBusy(self.session_id))
        turn.start_clock(self.ctx.scheduler, self.actor_ref)

    def _budget_spent(self) -> str | None:
        """Why the next task may not run: its owner's budget is spent (None: it may)."""
        owner = self.session.owner
        if owner is None or owner == ROOT_PRINCIPAL_ID:
            return None
        principal = self.store.principals.get(owner)
        budget = principal.limits.budget_usd
        if budget is None or principal.total_cost_usd < budget:
            return None
        return (
            f"Principal '{principal.name}' has spent its budget of ${budget:g}"
            f" (${principal.total_cost_usd:.4f}); this task was not run."
        )

    def _fail_unrun(self, error: str) -> None:
        """Fail the next task without sending it; the rest follow one message at a time."""
        task = self.store.start_next_task(self.session_id, epoch=self.epoch)
        if task is None:
            self._became_idle()
            return
        announce(self.ctx, task)
        ended = self.store.finish_task(task.id, TaskStatus.FAILED, error=error, epoch=self.epoch)
        announce(self.ctx, ended)
        self.actor_ref.tell(Advance())

    def _settle_orphan(self) -> bool:
        """Fail a task the store shows running that no turn of ours owns; True if there was one.

        Only this actor starts the session's tasks and it sends a prompt only once
        ``current`` holds the turn, so such a task's prompt never left: it fails
        (running cannot go back to pending) saying so, instead of blocking the queue.
        """
        orphan = self.store.running_task_of(self.session_id)
        self.unsure = False
        if orphan is None:
            return False
        self._fail_turn(
            orphan,
            "aicli could not confirm that this task started, so it was not sent to Claude; "
            "submit it again.",
        )
        return True

    def _fail_turn(self, task: Task, error: str) -> None:
        """A task this actor started but will not run: it fails through the usual commit."""
        self.current = Turn(task, self.generation, time.monotonic())
        self._not_idle()
        self._conclude(Outcome.failure(error))

    def _refuse_moved_workdir(self, why: str) -> None:
        """Fail the next task: its workdir is not the one the session was opened on. A live
        process dies too, as its sandbox holds what the workdir was; each later task fails
        alike until the directory is back."""
        if self.process is None:
            self._fail_next(why)
            return
        self._retire_process()
        task = self.store.start_next_task(self.session_id, epoch=self.epoch)
        if task is not None:
            self._fail_turn(task, why)

    def _workdir_problem(self) -> str | None:
        """Why the next task may not run in the session's workdir (or with its read paths),
        checked at every task start: a symlink or a rename can move them after the session
        was opened, and the sandbox binds whatever they lead to when a process starts."""
        root = self.ctx.settings.workspace_root
        if root and outside_root(self.session.workdir, root):
            return (
                f"The session's workdir '{self.session.workdir}' now lies outside the "
                f"workspace root '{root}'; open a session inside it."
            )
        for what, path in [
            ("workdir", self.session.workdir),
            *(("read path", p) for p in self.session.settings.read_paths),
        ]:
            if problem := path_moved(what, path):
                return problem
        return None

    def _spawn(self) -> bool:
        """Start a process for the next task; if that cannot work, that task fails saying why."""
        self.generation += 1
        self.leaving = False
        generation = self.generation
        ref = self.actor_ref

        def on_message(message: dict[str, Any]) -> None:
            tell_quietly(ref, StreamMessage(generation, message))

        def on_exit(exit_: ProcessExit) -> None:
            tell_quietly(ref, ProcessExited(generation, exit_))

        sandbox = self.ctx.sandbox
        proxy = self.ctx.api_proxy
        try:
            own = self.ctx.own_credentials(self.session.owner)
        except CredentialsUnavailable as exc:  # sealed with a key this node does not hold
            self._fail_next(exc.message)
            return False
        self.api_token = token = proxy.grant(own)
        env = session_environment(
            os.environ,
            self.ctx.claude_env,
            self.dirs,
            proxy.url,
            token,
            sandboxed=sandbox is not None,
        )
        launcher: list[str] = []
        try:
            self.dirs.create()
            if sandbox is not None:
                settings = self.session.settings
                self.launch = sandbox.launch(  # anew each time: the policy may have changed
                    policy_file=self.dirs.policy,
                    workdir=self.session.workdir,
                    session_dir=self.dirs.root,
                    read_paths=settings.read_paths,
                    network_domains=settings.network_domains,
                    api_port=proxy.port,
                )
                launcher = self.launch.launcher
                env.update(self.launch.env)
        except OSError as exc:
            log.error("session %s: cannot prepare its directories: %s", self.session_id, exc)
            self._let_go_of_access()
            self._fail_next(f"The session's directories could not be prepared: {exc}.")
            return False
        resume = self.session.claude_session_id
        moving = resume and self.transcript is not None
        if moving and not self.transcript.before_resume(self.session.workdir, resume):
            log.warning(
                "session %s: no transcript of its conversation here or stored; starting a new one",
                self.session_id,
            )
            resume = None
        process = self.ctx.process_factory(
            claude_bin=self.ctx.claude_bin if sandbox is None else sandbox.claude_bin,
            settings=self.session.settings,
            on_message=on_message,
            on_exit=on_exit,
            resume=resume,
            owner=f"{self.ctx.owner_prefix}{self.node_id}",
            base_env=env,
            launcher=launcher,
        )
        try:
            process.start()
        except (OSError, ValueError) as exc:  # ValueError: a NUL in an argument
            log.error("session %s: cannot start Claude: %s", self.session_id, exc)
            self._let_go_of_access()
            self._fail_next(f"The Claude process could not be started: {exc}.")
            return False
        self.process = process
        self.process_cost = 0.0
        self.ctx.census.add(self.session_id)
        if process.pid is not None:
            started = process.start_time or 0.0
            self.store.record_process(
                process.pid,
                started,
                process.mark,
                "claude",
                session_id=self.session_id,
                node_id=self.node_id,
            )
        return True

    def _fail_next(self, error: str) -> None:
        self._release_slot()
        task = self.store.start_next_task(self.session_id, epoch=self.epoch)
        if task is not None:
            self._fail_turn(task, error)

    # Ending tasks

    def _end_running(self, status: str, error: str) -> None:
        """Interrupt the running turn; its result (or the process's death) finishes the task."""
        turn = self.current
        assert turn is not None
        if turn.end is not None or turn.outcome is not None:
            return
        turn.end = (status, error)
        self._expire_waiting(f"The task is ending ({status}) before this was decided.")
        if self.process is not None and self.process.alive and not self.leaving:
            self.process.interrupt()
            turn.timers.append(
                self.ctx.scheduler.tell_later(
                    self.ctx.settings.cancel_grace,
                    self.actor_ref,
                    TaskDeadline(turn.task.id, "kill"),
                )
            )
        else:
            self._conclude(Outcome.failure(error))

    def _conclude(self, outcome: Outcome, events: list[tuple[str, dict[str, Any]]] = ()) -> None:
        """The turn is over: how it ended is decided now, and committed next."""
        turn = self.current
        assert turn is not None
        turn.cancel_timers()
        if turn.end is not None and outcome.status != TaskStatus.COMPLETED:
            outcome = Outcome.failure(turn.end[1], status=turn.end[0], like=outcome)
        turn.outcome = outcome
        turn.events = list(events)
        self._commit_end()

    def _commit_end(self) -> None:
        """Store the outcome; only then is the turn over. A failed commit kills the turn's
        process (nothing more of it may reach the store) and is retried."""
        turn = self.current
        assert turn is not None and turn.outcome is not None
        outcome = turn.outcome
        if self.transcript is not None and self.session.claude_session_id and not self.fenced:
            # Before the end is committed: a peer that runs the next task resumes from it.
            self.transcript.after_turn(
                self.session.workdir, self.session.claude_session_id, self.epoch
            )
        try:
            self.ctx.faults.reach("finish.before_commit")
            try:
                task = self.store.finish_task(
                    turn.task.id,
                    outcome.status,
                    output=outcome.output,
                    error=outcome.error,
                    cost_usd=outcome.cost_usd,
                    num_turns=outcome.num_turns,
                    duration_ms=outcome.duration_ms,
                    usage=outcome.usage,
                    events=turn.events,
                    epoch=self.epoch,
                )
            except IllegalTransition:  # an earlier attempt committed, its answer was lost
                task = self.store.get_task(turn.task.id)
        except NotOwner:
            self._let_go("another node took it over; it ends the task")
            return
        except Exception:
            log.exception(
                "session %s: could not record how task %s ended; retrying",
                self.session_id,
                turn.task.id,
            )
            self._retire_process()
            self._retry(RetryFinish())
            return
        self.current = None
        # Waiters first: they answer clients; the bookkeeping below can wait a moment.
        announce(self.ctx, task, duration_ms=task.duration_ms, cost_usd=task.cost_usd)
        self.ctx.metrics.task_duration.labels(task.status).observe(time.monotonic() - turn.started)
        if outcome.cost_usd:
            self.ctx.metrics.cost.inc(outcome.cost_usd)
        if turn.end is not None and self.process is not None and not self.leaving:
            self._sweep_tools(self.process)
        self._stop_if_done()
        self._advance()

    def _after_failure(self, exc: Exception) -> None:
        """A handler raised. During a turn: the generation rule. Otherwise: look again later."""
        turn = self.current
        if turn is None:
            self.unsure = True
            self._retry(Advance())
            return
        if turn.outcome is not None:
            self._retry(RetryFinish())
            return
        self._retire_process()
        try:
            self._conclude(
                Outcome.failure(
                    f"aicli failed while handling this task ({type(exc).__name__}: {exc}); "
                    "its Claude turn was stopped."
                )
            )
        except Exception:
            log.exception("session %s: could not fail the task either", self.session_id)

    def _retry(self, message: Advance | RetryFinish) -> None:
        """Try again in a while; one retry waits at a time."""
        if self.retry_timer is not None:
            self.retry_timer.cancel()
        self.retry_timer = self.ctx.scheduler.tell_later(RETRY_S, self.actor_ref, message)

    # Process and slot bookkeeping

    def _retire_process(self) -> None:
        """Kill this generation's process: whatever it still says belongs to no task."""
        if self.process is not None and not self.leaving:
            self._kill_process()

    def _kill_process(self) -> None:
        if self.process is not None:
            self.leaving = True  # before the thread runs: nothing more may be sent to it
            threading.Thread(target=self.process.kill, daemon=True).start()

    def _sweep_tools(self, process: ClaudeLike) -> None:
        """End tools an interrupted turn detached (``setsid cmd &``) before the next task starts."""
        self.sweeping = True
        ref = self.actor_ref

        def sweep() -> None:
            try:
                process.end_detached_tools()
            finally:
                tell_quietly(ref, ToolsSwept())

        threading.Thread(target=sweep, daemon=True).start()

    def _became_idle(self) -> None:
        """Nothing left to run: start the idle clock (process stop, then passivation)."""
        if self.current is not None or self.idle_timer is not None:
            return
        self.idle_token += 1
        if self.process is not None:
            self.supervisor.tell(ProcessIdle(self.session_id, time.monotonic()))
        timeout = self.ctx.settings.idle_process_timeout
        if timeout > 0:
            self.idle_timer = self.ctx.scheduler.tell_later(
                timeout, self.actor_ref, IdleTimeout(self.idle_token)
            )

    def _not_idle(self) -> None:
        """Work is here: the idle clock stops, and a passivation under way is called off."""
        self.passivating = False
        self.idle_token += 1
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def _stop_process(self) -> None:
        if self.process is not None and self.process.alive:
            self.leaving = True  # before the thread runs: nothing more may be sent to it
            threading.Thread(target=self.process.stop, daemon=True).start()
        elif self.process is None and self.slot == "held":
            self._release_slot()

    def _forget_process(self, process: ClaudeLike) -> None:
        """Best effort: a row left behind only makes the next start look for a dead pid."""
        self._let_go_of_access()
        self.ctx.census.discard(self.session_id)
        self.ctx.notifier.announce(CENSUS_KEY)
        if process.pid is not None and not self.fenced:  # fenced: the database may not answer
            try:
                self.store.forget_process(process.pid, process.start_time or 0.0)
            except (StorageError, Unavailable) as exc:
                log.warning(
                    "session %s: could not forget process %s: %s", self.session_id, process.pid, exc
                )

    def _let_go_of_access(self) -> None:
        """The process is gone: so is what it could reach (its API token, srt's scratch)."""
        if self.api_token is not None:
            self.ctx.api_proxy.revoke(self.api_token)
            self.api_token = None
        if self.launch is not None:
            self.launch.cleanup()
            self.launch = None

    def _release_slot(self) -> None:
        if self.slot != "none":
            self.slot = "none"
            self.supervisor.tell(SlotReleased(self.session_id))

    def _stop_if_done(self) -> None:
        """A closed or long-idle session's actor goes away once its process has.

        An idle one costs a thread and a database connection; the supervisor
        starts a new actor for the session when it is needed again, and also
        when a task reached the store while this one was stopping.
        """
        if self.process is not None or self.current is not None:
            return
        if (self.closed or self.passivating) and not self.stopping:
            if self.closed:
                self.dirs.remove()  # no process runs: nothing of the session needs them now
            self.stopping = True
            self._release_slot()
            self.stop()

    def _learn_claude_session(self, claude_session_id: str | None) -> None:
        if claude_session_id and claude_session_id != self.session.claude_session_id:
            self.session = self.store.update_session(
                self.session_id, claude_session_id=claude_session_id
            )


def path_moved(what: str, path: str) -> str | None:
    """Why a task may not run with the session's ``what`` (its workdir or a read path,
    stored as its real path when the session was opened) at ``path``, or None: it is gone,
    or a link now stands where it was, say to another user's workspace, which the next
    process would otherwise follow."""
    real = os.path.realpath(path)
    if real != path:
        return (
            f"The session's {what} '{path}' is no longer the directory the session was "
            f"opened on: it now leads to '{real}'. The task was not run; open a session on "
            "the directory you mean."
        )
    if not os.path.isdir(path):
        return f"The session's {what} '{path}' is gone; the task was not run."
    return None


def tell_quietly(ref: pykka.ActorRef[Any], message: object) -> None:
    """Tell ``ref`` unless it has stopped: late news for a gone actor is no error."""
    with contextlib.suppress(pykka.ActorDeadError):
        ref.tell(message)


def announce(ctx: ActorContext, task: Task, **details: Any) -> None:
    """Wake the task's waiters and log the change in one line (never the prompt itself).

    An ended task's keys are forgotten after the wake, as nothing moves them again.
    """
    ctx.notifier.announce(events_of(task.id))
    if task.is_terminal:
        ctx.notifier.announce(task.id)
        ctx.notifier.forget(task.id, events_of(task.id))
    log.info(
        "task %s",
        task.status,
        extra={"task_id": task.id, "session_id": task.session_id, **task.status_event(), **details},
    )
