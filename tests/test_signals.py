"""Wake-ups between nodes over LISTEN/NOTIFY: heard by peers only, batched, back after a cut."""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import pytest

from aicli.storage.signals import MAX_PAYLOAD_BYTES, Signals, signals_for
from aicli.testing.postgres import fresh_schema_url
from aicli.testing.waiting import wait_for

pytest_plugins = ("tests.storage_fixtures",)

# The backends of every Signals on the test's database (not on the server's other databases).
OURS = (
    " FROM pg_stat_activity"
    " WHERE application_name = 'aicli signals' AND datname = current_database()"
)
COUNT_OURS = "SELECT pid" + OURS
KILL_OURS = "SELECT pg_terminate_backend(pid)" + OURS


class Node:
    """A started Signals and what it heard."""

    def __init__(self, database_url: str) -> None:
        self.heard: list[str] = []
        self.reconnects = 0
        self._changed = threading.Condition()
        self.signals = Signals(database_url, self._on_signal, self._on_reconnect)

    def _on_signal(self, key: str) -> None:
        with self._changed:
            self.heard.append(key)
            self._changed.notify_all()

    def _on_reconnect(self) -> None:
        with self._changed:
            self.reconnects += 1
            self._changed.notify_all()

    def start(self) -> Node:
        self.signals.start()
        assert self.signals.wait_listening(5), "the listener did not listen"
        return self

    def wait(self, condition: Callable[[Node], bool], timeout: float = 5.0) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: condition(self), timeout), self.heard[-5:]

    def wait_heard(self, key: str, timeout: float = 5.0) -> None:
        self.wait(lambda node: key in node.heard, timeout)


@pytest.fixture
def schema_url(postgres_database: str) -> str:
    return fresh_schema_url(postgres_database)


@pytest.fixture
def nodes() -> Iterator[Callable[[str], Node]]:
    made: list[Node] = []

    def make(database_url: str) -> Node:
        made.append(Node(database_url))
        return made[-1]

    yield make
    for node in made:
        node.signals.close()


def _ours(admin_url: str, statement: str = COUNT_OURS) -> list[object]:
    """What ``statement`` gives for each of our backends, run on a connection of its own."""
    conn = psycopg2.connect(admin_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(statement)
            return [row[0] for row in cursor.fetchall()]
    finally:
        conn.close()


@pytest.mark.postgres
def test_peers_hear_each_other_but_not_themselves(
    schema_url: str, nodes: Callable[[str], Node]
) -> None:
    one, two = nodes(schema_url).start(), nodes(schema_url).start()
    one.signals.send("from one")
    two.wait_heard("from one")
    # Queued after "from one" was: had one heard its own, it would have heard it first.
    two.signals.send("from two")
    one.wait_heard("from two")
    assert (one.heard, two.heard) == (["from two"], ["from one"])
    assert one.reconnects == two.reconnects == 0


@pytest.mark.postgres
def test_nodes_in_other_schemas_do_not_hear_each_other(
    postgres_database: str, nodes: Callable[[str], Node]
) -> None:
    here, there = fresh_schema_url(postgres_database), fresh_schema_url(postgres_database)
    a, b = nodes(here).start(), nodes(here).start()
    c, d = nodes(there).start(), nodes(there).start()
    # One database has one notification queue, heard in order: each wait below
    # orders the signals, so anything crossing schemas would arrive first.
    c.signals.send("there 1")
    d.wait_heard("there 1")
    a.signals.send("here")
    b.wait_heard("here")
    c.signals.send("there 2")
    d.wait_heard("there 2")
    assert b.heard == ["here"]
    assert d.heard == ["there 1", "there 2"]
    assert a.heard == c.heard == []


@pytest.mark.postgres
def test_a_burst_goes_in_one_batch_without_repeats(
    schema_url: str, nodes: Callable[[str], Node]
) -> None:
    listener = nodes(schema_url).start()
    sender = nodes(schema_url)
    for i in range(1000):  # queued before the sender connects: one batch
        sender.signals.send(f"key {i % 400}")
    sender.signals.start()
    sender.signals.send("end")
    listener.wait_heard("end")
    assert listener.heard == [f"key {i}" for i in range(400)] + ["end"]


@pytest.mark.postgres
def test_latency_from_send_to_receipt(schema_url: str, nodes: Callable[[str], Node]) -> None:
    sender, listener = nodes(schema_url).start(), nodes(schema_url).start()
    sender.signals.send("warm up")
    listener.wait_heard("warm up")
    latencies = []
    for i in range(200):
        sent = time.perf_counter()
        sender.signals.send(str(i))
        listener.wait(lambda node, n=i + 2: len(node.heard) >= n, timeout=1.0)
        latencies.append(time.perf_counter() - sent)
    p50, p99 = (statistics.quantiles(latencies, n=100)[q] * 1000 for q in (49, 98))
    print(f"\nsignal latency over 200 sends: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    assert listener.heard == ["warm up", *map(str, range(200))]
    assert max(latencies) < 1.0


@pytest.mark.postgres
def test_after_its_backend_is_killed_a_node_rescans_and_signals_flow_again(
    postgres_database: str,
    schema_url: str,
    nodes: Callable[[str], Node],
    caplog: pytest.LogCaptureFixture,
) -> None:
    one, two = nodes(schema_url).start(), nodes(schema_url).start()
    wait_for(lambda: len(_ours(postgres_database)) == 4, what="two senders and two listeners")
    with caplog.at_level(logging.WARNING, logger="aicli.storage.signals"):
        killed = _ours(postgres_database, KILL_OURS)
        assert len(killed) == 4
        for node in (one, two):
            node.wait(lambda node: node.reconnects == 1)
            assert node.signals.wait_listening(5)
        # The senders learn of their loss by sending: nothing queued is lost.
        one.signals.send("after one")
        two.signals.send("after two")
        two.wait_heard("after one")
        one.wait_heard("after two")
    lost = [r for r in caplog.records if "lost its connection" in r.getMessage()]
    assert {r.getMessage().split()[1] for r in lost} == {"sender", "listener"}
    assert all(r.exc_info is None for r in caplog.records)


@pytest.mark.postgres
def test_close_is_quick_ends_the_connections_and_may_be_repeated(
    postgres_database: str, schema_url: str, nodes: Callable[[str], Node]
) -> None:
    node = nodes(schema_url).start()
    wait_for(lambda: len(_ours(postgres_database)) == 2, what="the sender and the listener")
    asked = time.monotonic()
    node.signals.close()
    assert time.monotonic() - asked < 0.5
    wait_for(lambda: not _ours(postgres_database), what="the connections to end")
    node.signals.close()
    node.signals.send("ignored after close")


@pytest.mark.postgres
def test_a_failing_callback_is_logged_and_the_listener_goes_on(
    schema_url: str, nodes: Callable[[str], Node], caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[str] = []

    def fussy(key: str) -> None:
        heard.append(key)
        if key == "bad":
            raise RuntimeError("the caller's bug")

    listener = Signals(schema_url, fussy, lambda: None)
    try:
        listener.start()
        assert listener.wait_listening(5)
        sender = nodes(schema_url).start()
        with caplog.at_level(logging.ERROR, logger="aicli.storage.signals"):
            sender.signals.send("bad")
            sender.signals.send("good")
            wait_for(lambda: "good" in heard, timeout=5, what="the signal after the failure")
        assert heard == ["bad", "good"]
        assert any(r.exc_info for r in caplog.records)
    finally:
        listener.close()


def test_sqlite_has_no_signals_and_postgres_gets_them_unstarted(tmp_path: Path) -> None:
    assert signals_for(f"sqlite:///{tmp_path}/aicli.db", print, lambda: None) is None
    signals = signals_for("postgresql://nobody@127.0.0.1:1/none", print, lambda: None)
    assert isinstance(signals, Signals)
    signals.close()  # never started: nothing to stop


def test_payloads_postgres_would_refuse_are_refused_at_once() -> None:
    signals = Signals("postgresql://nobody@127.0.0.1:1/none", print, lambda: None)
    signals.send("é" * (MAX_PAYLOAD_BYTES // 2))
    with pytest.raises(ValueError, match="at most"):
        signals.send("é" * (MAX_PAYLOAD_BYTES // 2 + 1))
    with pytest.raises(ValueError, match="NUL"):
        signals.send("a\0b")
    with pytest.raises(ValueError, match="PostgreSQL"):
        Signals(f"sqlite:///{MAX_PAYLOAD_BYTES}.db", print, lambda: None)
    signals.close()
