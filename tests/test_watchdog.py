"""The watchdog (``aicli.actors.watchdog``): a process of its own that ends a node's process
trees when the node's lease deadline passes, whether the server is scheduled or not.

Real processes carrying a node's mark stand in for the Claude CLIs and their tools;
the watchdog is started as the fencer starts it. The multi-node tests show it with
a stopped server (``tests/test_multinode_fencing.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import psutil
import pytest

from aicli.actors import process_tree
from aicli.actors.node_lease import LeaseState
from aicli.actors.watchdog import WatchdogProcess
from aicli.contract import Node, utcnow
from aicli.errors import NotOwner
from aicli.storage import Store
from aicli.testing.waiting import wait_for

pytest_plugins = ("tests.storage_fixtures",)


@pytest.fixture
def prefix() -> str:
    return f"aicli-test-{uuid.uuid4().hex[:8]}/"


@pytest.fixture
def watchdog(prefix: str) -> Iterator[WatchdogProcess]:
    made = WatchdogProcess(prefix)
    made.start()
    yield made
    made.close()


def marked(prefix: str, node_id: str) -> subprocess.Popen[bytes]:
    """A process of ``node_id``'s (``sleep``), with a child of its own that detached."""
    env = {**os.environ, process_tree.MARK_VARIABLE: f"{prefix}{node_id}/{uuid.uuid4().hex}"}
    return subprocess.Popen(
        ["sh", "-c", "setsid sleep 60 & exec sleep 60"], env=env, start_new_session=True
    )


def alive_of(prefix: str, node_id: str) -> list[psutil.Process]:
    return process_tree.marked_processes(f"{prefix}{node_id}/", prefix=True)


def test_a_deadline_that_passes_unrenewed_ends_that_node_s_processes_only(watchdog, prefix):
    mine, other = marked(prefix, "n1"), marked(prefix, "n2")
    try:
        wait_for(lambda: len(alive_of(prefix, "n1")) == 2, 5, "both of n1's processes")
        deadline = time.monotonic() + 0.5
        watchdog.arm("n1", deadline)
        watchdog.arm("n2", time.monotonic() + 60)
        wait_for(lambda: not alive_of(prefix, "n1"), 5, "n1's processes to end")
        assert time.monotonic() >= deadline
        assert mine.wait(5) == -signal.SIGKILL
        assert len(alive_of(prefix, "n2")) == 2, "another node's processes were hit"
    finally:
        for process in (mine, other):
            process_tree.kill_all(alive_of(prefix, "n1") + alive_of(prefix, "n2"))
            process.wait(5)


def test_renewals_keep_the_processes_and_a_late_one_does_not_revive_the_node(watchdog, prefix):
    first = marked(prefix, "n1")
    try:
        for _ in range(4):  # renewed in time, again and again
            watchdog.arm("n1", time.monotonic() + 0.3)
            time.sleep(0.15)  # a renewal's interval: the thing under test is the deadline
        assert first.poll() is None, "killed while renewed"
        wait_for(lambda: first.poll() is not None, 5, "the end after the last renewal")
        watchdog.arm("n1", time.monotonic() + 60)  # too late: that lease is over for good
        second = marked(prefix, "n1")  # what a server that woke up might start
        wait_for(lambda: second.poll() is not None, 5, "a process started after the deadline")
    finally:
        process_tree.kill_all(alive_of(prefix, "n1"))


def test_fenced_ends_what_is_left_at_once(watchdog, prefix):
    process = marked(prefix, "n1")
    watchdog.arm("n1", time.monotonic() + 60)
    wait_for(lambda: len(alive_of(prefix, "n1")) == 2, 5, "both processes")
    watchdog.fenced("n1")
    wait_for(lambda: not alive_of(prefix, "n1"), 5, "the fenced node's processes to end")
    process.wait(5)


PARENT = textwrap.dedent(
    """
    import sys, time
    from aicli.actors.watchdog import WatchdogProcess
    watchdog = WatchdogProcess(sys.argv[1])
    watchdog.start()
    watchdog.arm("n1", time.monotonic() + 600)
    print(watchdog.pid, flush=True)
    time.sleep(600)
    """
)


def test_when_its_server_dies_it_ends_the_node_s_processes_and_exits(prefix, tmp_path: Path):
    process = marked(prefix, "n1")
    server = subprocess.Popen(
        [sys.executable, "-c", PARENT, prefix], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        watchdog = psutil.Process(int(server.stdout.readline()))
        server.kill()  # no goodbye: the pipe's end is all the watchdog sees
        server.wait(5)
        wait_for(lambda: not alive_of(prefix, "n1"), 5, "the node's processes to end")
        watchdog.wait(5)  # it exits (not our child: its code is not ours to read)
        process.wait(5)
    finally:
        server.kill()
        process_tree.kill_all(alive_of(prefix, "n1"))


def test_a_node_that_lost_the_session_cannot_add_to_its_transcript(store: Store, tmp_path):
    """The write a woken-up node makes after its turn (the turn's transcript lines) names
    its claim, as its other writes do: refused once a peer claimed the session since."""
    session = store.create_session(workdir=str(tmp_path))
    node = store.nodes.join(None, 30)
    epoch = store.ownership.claim(session.id, node.id)
    assert epoch is not None
    assert store.transcripts.append(session.id, "cli", 0, b"one\n", epoch=epoch) == 4
    store.ownership.release(session.id, node.id, epoch)
    later = store.ownership.claim(session.id, node.id)
    with pytest.raises(NotOwner):
        store.transcripts.append(session.id, "cli", 4, b"stale\n", epoch=epoch)
    assert store.transcripts.append(session.id, "cli", 4, b"two\n", epoch=later) == 8


def test_past_its_fence_deadline_a_lease_is_not_held_even_before_the_fence_runs() -> None:
    """A server that was not scheduled at its deadline reads no lease when it runs again:
    its session actors let go instead of starting the next task, before the fence acts."""
    state = LeaseState()
    now = utcnow()
    node = Node(id="n1", url=None, started_at=now, expires_at=now, sessions=0, live_processes=0)
    assert state.set(node, time.monotonic() + 0.3)
    assert state.node == node
    wait_for(lambda: state.node is None, 5, "the deadline to pass")
    assert not state.is_lost("n1")  # the fence itself has not run
    # A renewal back after the deadline does not revive it: the watchdog acted on it.
    assert not state.set(node, time.monotonic() + 60)
    assert state.node is None
    joined = msgspec.structs.replace(node, id="n2")  # the node joins again as another
    assert state.set(joined, time.monotonic() + 60)
    assert state.node == joined
    sqlite = LeaseState()
    assert sqlite.set(node)  # no deadline (SQLite: no peer takes over): held
    assert sqlite.node == node


def test_a_watchdog_that_died_is_started_again_and_armed(watchdog, prefix):
    first = watchdog.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(first) or _zombie(first), 5, "the watchdog to die")
    process = marked(prefix, "n1")
    watchdog.arm("n1", time.monotonic() + 0.3)  # the next heartbeat starts another
    assert watchdog.pid not in (None, first)
    wait_for(lambda: process.poll() is not None, 5, "the new watchdog to end n1's process")
    process_tree.kill_all(alive_of(prefix, "n1"))


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
