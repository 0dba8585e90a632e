"""What a turn leaves behind, against the real CLI: text it cannot store, tools it detached,
a workdir that moved, and the answers a client gets for retries and timeouts."""

from __future__ import annotations

import os
import threading

import pykka
import pytest

from aicli import Runtime
from aicli.contract import TaskStatus
from aicli.errors import Unavailable
from aicli.runtime import supervision
from aicli.testing.fake_anthropic import FakeAnthropic, Reply
from aicli.testing.processes import marked_running
from aicli.testing.waiting import wait_for

HALF_EMOJI = "cut here \ud83d and go on"


@pytest.fixture
def fake_api():
    """The usual directives, plus a reply that holds a lone surrogate, as Node writes one."""

    def respond(request):
        return Reply.say(HALF_EMOJI) if "[[half-emoji]]" in request.prompt else None

    with FakeAnthropic(responder=respond) as fake:
        yield fake


def test_a_lone_surrogate_from_claude_is_stored_as_a_replacement_character(make_runtime, workdir):
    rt = make_runtime()
    session = rt.open_session(workdir=workdir)
    odd = rt.submit(session.id, "[[half-emoji]]")
    after = rt.submit(session.id, "[[say: my own answer]]")
    done = rt.wait(odd.id, timeout=60)
    assert done.status == TaskStatus.COMPLETED
    assert done.output == "cut here \ufffd and go on"
    assistant = [e for e in rt.events(odd.id) if e.type == "assistant"]
    assert "\ufffd" in str(assistant[-1].data)
    assert rt.wait(after.id, timeout=60).output == "my own answer"


def _detached(rt: Runtime) -> list:
    return marked_running(rt.owner_prefix, "sleep 601")


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_tools_that_detached_themselves_end_with_the_interrupted_turn(make_runtime, workdir, how):
    rt = make_runtime(cancel_grace=5)
    session = rt.open_session(workdir=workdir, allowed_tools=["Bash"])
    command = "[[bash: (setsid sleep 601 > /dev/null 2>&1 &); echo started; sleep 600]]"
    task = rt.submit(session.id, command, timeout_s=8 if how == "timeout" else None)
    wait_for(lambda: _detached(rt), timeout=30, what="the detached sleep")
    if how == "cancel":
        assert rt.cancel(task.id).status == TaskStatus.CANCELLED
    else:
        assert rt.wait(task.id, timeout=60).status == TaskStatus.FAILED
    wait_for(lambda: not _detached(rt), timeout=10, what="the detached sleep to be ended")
    after = rt.submit(session.id, "[[say: still fine]]")
    assert rt.wait(after.id, timeout=60).output == "still fine"


def test_a_workdir_moved_outside_the_root_fails_its_task_naming_the_root(make_runtime, tmp_path):
    root = tmp_path / "root"
    inside = root / "project"
    outside = tmp_path / "elsewhere"
    inside.mkdir(parents=True)
    outside.mkdir()
    rt = make_runtime(workspace_root=str(root))
    session = rt.open_session(workdir=str(inside))
    inside.rmdir()
    os.symlink(outside, inside)  # same path, now leading out of the root
    task = rt.wait(rt.submit(session.id, "[[say: hi]]").id, timeout=60)
    assert task.status == TaskStatus.FAILED
    assert str(root) in task.error and "outside the workspace root" in task.error


def test_the_thread_count_stays_flat_over_many_tasks(make_runtime, workdir):
    """Every idle period used to leave a 600 s timer thread behind."""
    rt = make_runtime()
    session = rt.open_session(workdir=workdir)
    rt.wait(rt.submit(session.id, "[[say: warm]]").id, timeout=60)
    before = threading.active_count()
    for n in range(150):
        assert rt.wait(rt.submit(session.id, f"[[say: {n}]]").id, timeout=60).output == str(n)
    assert threading.active_count() <= before + 2


def test_an_idempotent_retry_after_the_close_returns_the_first_task(make_runtime, workdir):
    rt = make_runtime()
    session = rt.open_session(workdir=workdir)
    first, created = rt.submit_task(session.id, "[[say: once]]", idempotency_key="k1")
    assert created
    rt.wait(first.id, timeout=60)
    rt.close_session(session.id)
    again, created = rt.submit_task(session.id, "[[say: once]]", idempotency_key="k1")
    assert not created and again.id == first.id


def test_an_ask_that_times_out_says_the_outcome_is_unknown(monkeypatch):
    monkeypatch.setattr(supervision, "ASK_TIMEOUT", 0.01)
    with pytest.raises(Unavailable) as raised:
        supervision.ask(pykka.ThreadingFuture())
    assert "outcome is unknown" in raised.value.message
