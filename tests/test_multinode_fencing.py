"""Several nodes as separate hosts: decisions made elsewhere, one answer everywhere, and a
frozen owner fenced before the takeover.

One cluster of three nodes for the module (each in a PID namespace of its own, the
real CLI against the fake API, ``--lease-ttl 3``), reused by every test here:

* an approval decided over HTTP on a node that does not run the session (allow,
  allow with ``updated_input``, answers to a question, deny) reaches the CLI;
* ``process_alive`` is the same on every node;
* the owner's server process stopped (SIGSTOP) while a tool runs: the node's
  watchdog kills the tool before a peer takes the session over and runs the next
  task; continued (SIGCONT), the server writes nothing and joins again as a new node.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aicli.storage.testing import fresh_schema_url
from aicli.testing.fake_anthropic import FakeAnthropic
from tests.cluster import LEASE_TTL, Cluster, NodeProcess, poll, report, status_events

pytest_plugins = ("tests.storage_fixtures",)

TTL = LEASE_TTL


@pytest.fixture(scope="module")
def module_fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture(scope="module")
def nodes(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_database: str,
    claude_bin: str,
    module_fake: FakeAnthropic,
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("fencing")
    home = root / "home"
    home.mkdir()
    env = {
        **module_fake.env(),
        "HOME": str(home),
        "PATH": os.environ["PATH"],
        "AICLI_CLAUDE_BIN": claude_bin,
    }
    cluster = Cluster(root, fresh_schema_url(postgres_database), env)
    failed_before = request.session.testsfailed
    try:
        cluster.start(3)
        yield cluster
    finally:
        if request.session.testsfailed > failed_before:
            print(cluster.logs())
        cluster.stop()


def _session_on(nodes: Cluster, target: NodeProcess, root: Path, **fields: Any) -> dict[str, Any]:
    """A session ``target`` runs (one task done there, its CLI started)."""
    for attempt in range(6):
        via = [target, *[n for n in nodes.live if n is not target]][attempt % len(nodes.live)]
        workdir = root / f"w{time.monotonic_ns()}"
        workdir.mkdir(parents=True)
        session = via.client.open_session(str(workdir), **fields)
        done = via.client.submit(session["id"], "[[say: warm]]", wait=60)
        assert done["status"] == "completed", done
        session = via.client.session(session["id"])
        if session["node"] == target.ready()["node"]:
            session["_workdir"] = workdir
            return session
    pytest.fail(f"no session landed on {target}")


def _pending(client: Any, task_id: str) -> dict[str, Any]:
    def listed() -> dict[str, Any] | None:
        page = client.get_json("/approvals", task_id=task_id, status="pending")
        return page["data"][0] if page["data"] else None

    return poll(listed, 30, f"a pending approval of {task_id}")


def _decide(client: Any, approval_id: str, **body: Any) -> dict[str, Any]:
    response = client.request("POST", f"/approvals/{approval_id}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


# Decisions made on a node that does not run the session


@pytest.mark.postgres
def test_decisions_made_on_a_node_that_does_not_run_the_session_reach_its_cli(
    nodes: Cluster, module_fake: FakeAnthropic, tmp_path: Path
) -> None:
    owner = nodes.live[0]
    session = _session_on(nodes, owner, tmp_path, approvals="ask")
    workdir: Path = session["_workdir"]
    elsewhere = [node for node in nodes.live if node is not owner]
    cases = [
        ("allow", "[[bash: echo allowed > allowed.txt]]", {"decision": "allow"}),
        ("changed", "[[bash: echo asked > asked.txt]]", None),  # updated_input, below
        (
            "answers",
            "[[ask: Which database? | SQLite | PostgreSQL]]",
            {"decision": "allow", "answers": {"Which database?": "PostgreSQL"}},
        ),
        ("deny", "[[bash: echo no > denied.txt]]", {"decision": "deny", "message": "Not here."}),
    ]
    started = time.monotonic()
    for index, (name, prompt, body) in enumerate(cases):
        decider = elsewhere[index % len(elsewhere)]
        task = owner.client.submit(session["id"], prompt)
        approval = _pending(decider.client, task["id"])
        if body is None:
            body = {
                "decision": "allow",
                "updated_input": {**approval["input"], "command": "echo changed > changed.txt"},
            }
        _decide(decider.client, approval["id"], **body)
        done = decider.client.wait_terminal(task["id"], timeout=30)
        assert done["status"] == "completed", (name, done)
        assert done["awaiting_approval"] is None, (name, done)
    assert (workdir / "allowed.txt").read_text() == "allowed\n"
    assert (workdir / "changed.txt").read_text() == "changed\n"
    assert not (workdir / "asked.txt").exists()
    assert not (workdir / "denied.txt").exists()
    answered = [r.last_tool_result for r in module_fake.requests_with_prompt("Which database?")]
    assert any(result and '"Which database?"="PostgreSQL"' in result for result in answered)
    denied = [r.last_tool_result for r in module_fake.requests_with_prompt("denied.txt")]
    assert any(result and "Not here." in result for result in denied)
    assert nodes.live[0].client.session(session["id"])["node"] == owner.ready()["node"]
    report("decisions on a non-owner", four_tasks_s=round(time.monotonic() - started, 2))


# process_alive


@pytest.mark.postgres
def test_every_node_says_the_same_about_a_session_s_process(nodes: Cluster, tmp_path) -> None:
    owner = nodes.live[-1]
    session = _session_on(nodes, owner, tmp_path)

    def answers() -> list[Any]:
        return [
            (node.client.session(session["id"])["process_alive"],)
            + tuple(s["process_alive"] for s in node.client.sessions() if s["id"] == session["id"])
            for node in nodes.live
        ]

    assert answers() == [(True, True)] * len(nodes.live), answers()
    closed = owner.client.request("DELETE", f"/sessions/{session['id']}")
    assert closed.status_code in (200, 204), closed.text
    # Its process stops on the owner; from then on no node says it lives.
    poll(lambda: answers() == [(False, False)] * len(nodes.live), 30, "every node to say no")


# A frozen owner


def _stamps(path: Path) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            who, _, at = line.partition(" ")
            with contextlib.suppress(ValueError):
                found.setdefault(who, []).append(float(at))
    return found


def _ticking(name: str, seconds: float) -> str:
    """A Bash command that appends ``<name> <time>`` to ``stamps`` every 0.1 s."""
    count = int(seconds * 10)
    return (
        f"for i in $(seq {count}); do echo {name} $(date +%s.%N) >> stamps; sleep 0.1; done;"
        f" echo {name} done"
    )


@pytest.mark.postgres
def test_a_frozen_owner_is_fenced_by_its_watchdog_and_killed_not_continued_when_it_wakes(
    nodes: Cluster, module_fake: FakeAnthropic, tmp_path
) -> None:
    frozen = nodes.live[1]
    session = _session_on(nodes, frozen, tmp_path, allowed_tools=["Bash"])
    session_id = session["id"]
    stamps = session["_workdir"] / "stamps"
    old_id = frozen.ready()["node"]
    peer = next(node for node in nodes.live if node is not frozen)

    first = frozen.client.submit(session_id, f"[[bash: {_ticking('a', 30)}]]")
    second = peer.client.submit(session_id, f"[[bash: {_ticking('b', 1)}]]")
    poll(lambda: len(_stamps(stamps).get("a", [])) >= 3, 30, "the first task's tool to tick")
    frozen.freeze()
    frozen_at = time.time()
    try:
        done = peer.client.wait_terminal(second["id"], timeout=12 * TTL)
        after = peer.client.task(first["id"])
        seen = _stamps(stamps)
        failed_at = time.time()
        assert done["status"] == "completed", done
        assert after["status"] == "failed" and old_id in (after["error"] or ""), after
        assert seen.get("b"), f"the next task's tool never ran: {done}"
        last_a, first_b = max(seen["a"]), min(seen["b"])
        report(
            "a frozen owner (s after the SIGSTOP)",
            last_tick_of_the_frozen_tool=round(last_a - frozen_at, 3),
            first_tick_of_the_next_task=round(first_b - frozen_at, 3),
            next_task_done=round(failed_at - frozen_at, 3),
        )
        assert last_a < first_b, "the frozen node's tool ran while the next task's did"
        assert last_a - frozen_at < TTL, "the frozen node's tool outlived its lease"
        events_before = len(peer.client.events(first["id"]))
        requests_before = len(module_fake.requests)
    finally:
        frozen.thaw()
    thawed_at = time.time()

    # Woken up: it fences itself (its lease is gone) and joins again as a new node; it
    # continues nothing: no tick, no event of the task it ran, no request to the API.
    new_id = frozen.wait_rejoined(timeout=4 * TTL, old_ids=[old_id])
    assert new_id != old_id
    assert old_id not in nodes.listed_ids(peer)
    assert max(_stamps(stamps)["a"]) == last_a, "the frozen node's tool ran again"
    assert len(peer.client.events(first["id"])) == events_before, "it wrote for the lost task"
    final = peer.client.task(first["id"])
    assert (final["status"], final["output"]) == ("failed", None)
    assert status_events(peer.client.events(first["id"]))[-1] == "failed"
    assert "a done" not in [r.last_tool_result for r in module_fake.requests[requests_before:]]
    # And the session goes on, run by whichever node.
    third = frozen.client.submit(session_id, "[[say: after the thaw]]", wait=60)
    assert third["status"] == "completed", third
    report("a frozen owner thawed", rejoined_after_s=round(time.time() - thawed_at, 3))
