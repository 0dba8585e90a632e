"""What a session actor and its components share with the runtime, and the two ways they
speak outward: waking a task's waiters, and telling an actor that may have stopped.

Kept apart from the actor so its components (``process_host``, ``session_claim``,
``task_taker``, ``turn_recorder``, ``turn_approvals``, ``idle_clock``) need not import it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pykka

from aicli.actors.census import ProcessCensus
from aicli.actors.claude_process import ClaudeLike, ClaudeProcess
from aicli.actors.faults import Faults
from aicli.actors.messages import Answer
from aicli.actors.node_lease import LeaseState
from aicli.actors.notifier import Notifier, events_of
from aicli.actors.sandbox import Sandbox
from aicli.actors.scheduler import Scheduler
from aicli.actors.session_dirs import SessionDirs
from aicli.actors.transcript_sync import TranscriptSync
from aicli.contract import Task
from aicli.metrics import Metrics
from aicli.settings import Settings
from aicli.storage import Store

if TYPE_CHECKING:
    from aicli.actors.api_proxy import ApiProxy

# One logger for the actor and its components: what operators filter on stays as it was.
SESSION_LOG = "aicli.actors.session"

log = logging.getLogger(SESSION_LOG)

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


def transcript_sync(
    context: ActorContext, session_id: str, dirs: SessionDirs
) -> TranscriptSync | None:
    """With several nodes (PostgreSQL) the conversation moves with the session; alone, the
    CLI's own files are all there is."""
    if not context.store.is_postgres:
        return None
    env = {**os.environ, **context.claude_env, "CLAUDE_CONFIG_DIR": str(dirs.claude)}
    return TranscriptSync(context.store, session_id, env)
