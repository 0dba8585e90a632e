"""The session actor's declared state moves only along its tables' edges."""

from __future__ import annotations

import pytest

from aicli.actors.session_state import Intake, Life, SessionState, Slot
from aicli.errors import IllegalTransition


def test_passivation_is_called_off_by_work_and_ends_in_a_stop() -> None:
    state = SessionState()
    state.passivate()
    assert state.life is Life.PASSIVATING and state.goes_once_idle
    state.wake()
    assert state.life is Life.OPEN and not state.goes_once_idle
    state.passivate()
    state.stop()
    assert state.actor_stopping and not state.goes_once_idle
    state.wake()  # too late: a stopping actor does not come back
    state.passivate()
    assert state.life is Life.STOPPING


def test_a_stopping_actor_cannot_stop_again_or_reopen() -> None:
    state = SessionState()
    state.stop()
    with pytest.raises(IllegalTransition):
        state.stop()


def test_a_fenced_actor_stays_fenced_when_it_lets_go() -> None:
    state = SessionState()
    state.hand_off()
    assert state.handed_off and not state.fenced
    state.fence()
    state.hand_off()
    assert state.life is Life.FENCED and state.handed_off and state.actor_stopping


def test_intake_only_narrows_and_a_closed_session_stays_closed() -> None:
    state = SessionState()
    state.drain()
    assert state.intake is Intake.DRAINING and not state.takes_new_work
    assert not state.goes_once_idle  # draining alone keeps the actor
    state.close()
    state.drain()
    assert state.intake is Intake.CLOSED and state.goes_once_idle


def test_a_draining_actor_may_still_passivate() -> None:
    state = SessionState()
    state.drain()
    state.passivate()
    assert state.goes_once_idle and not state.takes_new_work


def test_slot_moves() -> None:
    state = SessionState()
    with pytest.raises(IllegalTransition):
        state.move_slot(Slot.NONE)
    state.move_slot(Slot.REQUESTED)
    with pytest.raises(IllegalTransition):
        state.move_slot(Slot.REQUESTED)
    state.move_slot(Slot.HELD)
    with pytest.raises(IllegalTransition):
        state.move_slot(Slot.REQUESTED)
    state.move_slot(Slot.NONE)
    state.move_slot(Slot.HELD)  # a grant that crossed our release on its way
    assert state.slot is Slot.HELD
