"""The messages actors ``tell`` each other: immutable, so no two threads share a mutable object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aicli.actors.claude_process import ProcessExit


# To a session actor
@dataclass(frozen=True)
class StreamMessage:
    """A line the CLI wrote; ``generation`` tells messages of a replaced process apart."""

    generation: int
    message: dict[str, Any]


@dataclass(frozen=True)
class ProcessExited:
    generation: int
    exit: ProcessExit


@dataclass(frozen=True)
class SlotGranted:
    """The supervisor lets this session start a Claude process."""


@dataclass(frozen=True)
class Evict:
    """The supervisor needs this session's process slot; stop the process if it is idle."""


@dataclass(frozen=True)
class TaskDeadline:
    """A timer for the running task fired: ``kind`` is ``timeout`` or ``kill``; a timeout's
    ``token`` tells it from one set before its clock was paused for a person."""

    task_id: str
    kind: str
    token: int = 0


@dataclass(frozen=True)
class Answer:
    """A decision on ``approval_id`` is committed: send the CLI ``response``."""

    approval_id: str
    response: dict[str, Any]


@dataclass(frozen=True)
class ApprovalDeadline:
    """No one decided ``approval_id`` within the session's ``approval_timeout_s``."""

    approval_id: str


@dataclass(frozen=True)
class IdleTimeout:
    token: int


@dataclass(frozen=True)
class Advance:
    """The session's queue in the store may hold work: start its next task if none runs."""


@dataclass(frozen=True)
class Cancel:
    """Interrupt the running task ``task_id`` (a pending one is cancelled in the store)."""

    task_id: str


@dataclass(frozen=True)
class Close:
    """The session was closed in the store: interrupt its running task, stop its process."""


@dataclass(frozen=True)
class RetryFinish:
    """Try again to commit how the running task ended (the last commit failed)."""


@dataclass(frozen=True)
class ToolsSwept:
    """The tools an interrupted turn left behind are gone: the next task may start."""


@dataclass(frozen=True)
class Drain:
    """The server is stopping: finish the running task, start no other."""


@dataclass(frozen=True)
class Shutdown:
    """The server is stopping: interrupt the running task, keep pending ones for the next start."""


# To the supervisor
@dataclass(frozen=True)
class Wake:
    """The session's queue in the store changed: its actor (started if need be) should look.

    ``from_peer``: a peer told of the change, made on its node: only an actor already
    running the session here need look, or a new one if this node holds the session (the
    actor reads which, on its own thread). Otherwise the change was made on this node.
    """

    session_id: str
    from_peer: bool = False


@dataclass(frozen=True)
class CancelRunning:
    session_id: str
    task_id: str


@dataclass(frozen=True)
class CloseSession:
    session_id: str


@dataclass(frozen=True)
class Decided:
    """A decision on one of the session's approvals is committed; its actor answers the CLI."""

    session_id: str
    answer: Answer


@dataclass(frozen=True)
class SlotRequested:
    session_id: str


@dataclass(frozen=True)
class SlotReleased:
    session_id: str


@dataclass(frozen=True)
class ProcessIdle:
    session_id: str
    since: float


@dataclass(frozen=True)
class ProcessBusy:
    session_id: str


@dataclass(frozen=True)
class EvictRefused:
    session_id: str


@dataclass(frozen=True)
class SessionStopped:
    """A session actor ended; ``actor_urn`` tells it apart from a newer actor of that session.

    ``handed_off``: it ended because another node holds the session, which runs its queue.
    ``pending``: its queue held work when it ended (a task came in while it was stopping),
    read by the actor on its own thread, so the supervisor starts a new one without a read.
    """

    session_id: str
    actor_urn: str
    handed_off: bool = False
    pending: bool = False


@dataclass(frozen=True)
class Fence:
    """This node lost its lease: end every Claude process and session actor, writing nothing."""


@dataclass(frozen=True)
class Rescan:
    """Look for sessions no node runs that have work (a wake may have been lost).

    Told bare by whoever wants a look; the supervisor's link reads the store off the
    supervisor's thread and passes on what it found: ``unclaimed``, sessions with work
    that no node holds (started unless an actor runs them here); ``held``, those with
    work this node holds (their actors told to look, or started); ``closed``, those
    this node holds that were closed on a peer (their actors end their turns).
    """

    unclaimed: tuple[str, ...] = ()
    held: tuple[str, ...] = ()
    closed: tuple[str, ...] = ()
