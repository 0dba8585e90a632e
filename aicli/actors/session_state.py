"""The session actor's declared state: where the actor is in its life, whether the session
takes new work, and where its process slot stands.

Two axes, not one: whether new work may start (``Intake``) and whether the actor stays
(``Life``) change for different reasons and combine. A draining server's actor may still
be passivating (idle: it goes once its process has), and a closed session's actor that
another node took over is both closed and handed off. Each axis moves only along the
edges of its table; any other move is a bug and raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from aicli.errors import IllegalTransition


class Life(Enum):
    OPEN = "open"  # runs the session's tasks
    # Idle for the whole timeout: its process stops, then the actor, unless work comes first.
    PASSIVATING = "passivating"
    STOPPING = "stopping"  # the actor asked to stop; a new actor takes any new work
    HANDED_OFF = "handed off"  # another node holds the session (or must): nothing more is written
    FENCED = "fenced"  # this node lost its lease: handed off, and the database may not answer


class Intake(Enum):
    OPEN = "open"  # new tasks start
    DRAINING = "draining"  # the server is stopping: nothing new starts
    CLOSED = "closed"  # the session is closed: nothing new starts, the actor goes once idle


class Slot(Enum):
    """The supervisor's permit to run a process: asked for, held, or neither."""

    NONE = "none"
    REQUESTED = "requested"
    HELD = "held"


LIFE_MOVES: dict[Life, frozenset[Life]] = {
    Life.OPEN: frozenset({Life.PASSIVATING, Life.STOPPING, Life.HANDED_OFF, Life.FENCED}),
    Life.PASSIVATING: frozenset({Life.OPEN, Life.STOPPING, Life.HANDED_OFF, Life.FENCED}),
    Life.STOPPING: frozenset({Life.HANDED_OFF, Life.FENCED}),
    Life.HANDED_OFF: frozenset({Life.HANDED_OFF, Life.FENCED}),
    Life.FENCED: frozenset({Life.FENCED}),
}
INTAKE_MOVES: dict[Intake, frozenset[Intake]] = {
    Intake.OPEN: frozenset({Intake.DRAINING, Intake.CLOSED}),
    Intake.DRAINING: frozenset({Intake.CLOSED}),
    Intake.CLOSED: frozenset(),
}
# A grant may cross a release of ours on its way (NONE -> HELD), or a request made after it.
SLOT_MOVES: dict[Slot, frozenset[Slot]] = {
    Slot.NONE: frozenset({Slot.REQUESTED, Slot.HELD}),
    Slot.REQUESTED: frozenset({Slot.HELD, Slot.NONE}),
    Slot.HELD: frozenset({Slot.HELD, Slot.NONE}),
}


S = TypeVar("S", Life, Intake, Slot)


def checked(moves: dict[S, frozenset[S]], now: S, to: S) -> S:
    """``to``, if the table has the edge from ``now``: any other move is a bug."""
    if to not in moves[now]:
        raise IllegalTransition(f"session actor: {type(now).__name__} {now.value} -> {to.value}")
    return to


@dataclass
class SessionState:
    life: Life = Life.OPEN
    intake: Intake = Intake.OPEN
    slot: Slot = Slot.NONE
    # The store may show a task of this session running that no turn here owns: its start
    # committed but the answer was lost, or a step after it failed. The store is looked at
    # before anything runs.
    orphan_possible: bool = True
    # Tools an interrupted turn detached are being ended: nothing starts until they are.
    sweeping_tools: bool = False

    @property
    def takes_new_work(self) -> bool:
        return self.intake is Intake.OPEN

    @property
    def actor_stopping(self) -> bool:
        return self.life in (Life.STOPPING, Life.HANDED_OFF, Life.FENCED)

    @property
    def handed_off(self) -> bool:
        return self.life in (Life.HANDED_OFF, Life.FENCED)

    @property
    def fenced(self) -> bool:
        return self.life is Life.FENCED

    @property
    def goes_once_idle(self) -> bool:
        """Whether the actor stops once no process and no turn are left (and it is not yet)."""
        closing = self.intake is Intake.CLOSED or self.life is Life.PASSIVATING
        return closing and not self.actor_stopping

    def drain(self) -> None:
        if self.intake is Intake.OPEN:
            self.intake = checked(INTAKE_MOVES, self.intake, Intake.DRAINING)

    def close(self) -> None:
        if self.intake is not Intake.CLOSED:
            self.intake = checked(INTAKE_MOVES, self.intake, Intake.CLOSED)

    def passivate(self) -> None:
        """Idle for the whole timeout; an actor already on its way out stays so."""
        if self.life is Life.OPEN:
            self.life = checked(LIFE_MOVES, self.life, Life.PASSIVATING)

    def wake(self) -> None:
        """Work is here: a passivation under way is called off."""
        if self.life is Life.PASSIVATING:
            self.life = checked(LIFE_MOVES, self.life, Life.OPEN)

    def stop(self) -> None:
        self.life = checked(LIFE_MOVES, self.life, Life.STOPPING)

    def hand_off(self) -> None:
        """Another node runs the session (or must); a fenced actor stays fenced."""
        self.life = checked(LIFE_MOVES, self.life, Life.FENCED if self.fenced else Life.HANDED_OFF)

    def fence(self) -> None:
        self.life = checked(LIFE_MOVES, self.life, Life.FENCED)

    def move_slot(self, to: Slot) -> None:
        self.slot = checked(SLOT_MOVES, self.slot, to)
