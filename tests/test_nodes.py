"""Nodes and their leases: the ground of several servers on one database (1.1, "Nodes").

Every expiry is the database's: a lease is made, renewed and judged by its
``now()``, so these tests move a lease by writing the row, never by a clock of
their own.
"""

from __future__ import annotations

import time

import pytest

from aicli.actors import process_tree
from aicli.errors import StorageError
from aicli.runtime import owner_prefix
from aicli.storage import Store
from aicli.testing import store_sql
from aicli.testing.postgres import fresh_schema_url
from aicli.testing.waiting import wait_for
from tests.http_server import Client, error_of, serving

pytest_plugins = ("tests.storage_fixtures",)

TOKEN = "nodes-token"


def expire(store: Store, node_id: str) -> None:
    """End a lease now, as the database sees it."""
    sql = "UPDATE nodes SET expires_at = ? WHERE id = ?"
    store_sql.write(store, sql, ("2000-01-01 00:00:00.000000", node_id))


def test_a_lease_is_made_renewed_and_ended_by_the_database(store: Store) -> None:
    node = store.nodes.join("http://10.0.0.7:8080", 5.0)
    assert node.url == "http://10.0.0.7:8080" and (node.sessions, node.live_processes) == (0, 0)
    assert (node.expires_at - node.started_at).total_seconds() == pytest.approx(5.0, abs=0.01)
    assert [n.id for n in store.nodes.live()] == [node.id]
    renewed = store.nodes.renew(node.id, 5.0, 3, 2)
    assert renewed is not None and renewed.expires_at >= node.expires_at
    assert (renewed.sessions, renewed.live_processes) == (3, 2)
    expire(store, node.id)
    assert store.nodes.live() == []
    if store.is_postgres:
        assert store.nodes.renew(node.id, 5.0, 0, 0) is None  # ran out: peers may act on it
    else:  # one server a file: nobody took over, so the lease goes on
        assert store.nodes.renew(node.id, 5.0, 0, 0) is not None
    store.nodes.leave(node.id)
    assert store.nodes.renew(node.id, 5.0, 0, 0) is None


def test_nodes_are_listed_oldest_first_and_leave_at_once(store: Store) -> None:
    first = store.nodes.join(None, 5.0)
    second = store.nodes.join(None, 5.0)
    assert [n.id for n in store.nodes.live()] == [first.id, second.id]
    store.nodes.leave(first.id)
    assert [n.id for n in store.nodes.live()] == [second.id]


def test_a_running_server_holds_a_lease_and_lists_itself(make_runtime) -> None:
    runtime = make_runtime(api_token=TOKEN, node_url="http://node-1:8080", lease_ttl=0.6)
    node = runtime.lease.node
    assert node is not None
    with serving(runtime) as url:
        client = Client(url, token=TOKEN)
        assert client.get("/readyz").json()["node"] == node.id
        [listed] = client.get("/nodes").json()["data"]
        assert (listed["id"], listed["url"]) == (node.id, "http://node-1:8080")
        # Renewed every third of the TTL: it outlives several TTLs.
        wait_for(
            lambda: runtime.lease.node.expires_at > node.expires_at,
            timeout=5,
            what="a renewal",
        )
        user = client.post("/principals", json={"name": "u"}).json()
        error_of(Client(url, token=user["token"]).get("/nodes"), 403, "forbidden")


def test_a_stopped_server_leaves_at_once(make_runtime, tmp_path) -> None:
    runtime = make_runtime()
    node = runtime.lease.node
    runtime.stop()
    again = make_runtime()
    assert [n.id for n in again.store.nodes.live()] == [again.lease.node.id]
    assert again.lease.node.id != node.id  # a new node per start


@pytest.mark.postgres
def test_a_lease_that_ran_out_is_lost_and_the_node_joins_again_as_another(
    make_runtime, postgres_database
) -> None:
    runtime = make_runtime(lease_ttl=0.6, database_url=fresh_schema_url(postgres_database))
    first = runtime.lease.node
    expire(runtime.store, first.id)
    rejoined = wait_for(
        lambda: (node := runtime.lease.node) is not None and node.id != first.id and node,
        timeout=5,
        what="a new lease",
    )
    assert runtime.readiness()["node"] == rejoined.id
    assert first.id not in {n.id for n in runtime.store.nodes.live()}


def test_on_sqlite_a_lease_that_ran_out_goes_on(make_runtime) -> None:
    """One server a file: no peer took its sessions over, so nothing is lost."""
    runtime = make_runtime(lease_ttl=0.6)
    first = runtime.lease.node
    expire(runtime.store, first.id)
    wait_for(
        lambda: [n.id for n in runtime.store.nodes.live()] == [first.id],
        timeout=5,
        what="the renewal",
    )
    assert runtime.readiness()["node"] == first.id


@pytest.mark.postgres
def test_renewals_that_keep_failing_lose_the_lease_before_it_ends(
    make_runtime, monkeypatch, postgres_database
):
    """Where peers could take its sessions over (PostgreSQL), the node fences itself."""
    runtime = make_runtime(lease_ttl=0.9, database_url=fresh_schema_url(postgres_database))
    node = runtime.lease.node
    failed_at: list[float] = []

    def database_down(*args, **kwargs):
        failed_at.append(time.monotonic())
        raise StorageError("connection refused")

    monkeypatch.setattr(runtime.store.nodes, "renew", database_down)
    monkeypatch.setattr(runtime.store.nodes, "join", database_down)
    wait_for(lambda: runtime.lease.node is None, timeout=5, what="the lease to be lost")
    # Lost by this node's own clock, before the database would end it.
    assert time.monotonic() - failed_at[0] < 0.9
    monkeypatch.undo()
    rejoined = wait_for(lambda: runtime.lease.node, timeout=5, what="a new lease")
    assert rejoined.id != node.id


def test_every_process_a_node_starts_carries_its_id(make_runtime, workdir) -> None:
    runtime = make_runtime()
    node = runtime.lease.node
    session = runtime.open_session(workdir=workdir)
    assert runtime.submit(session.id, "[[say: marked]]", wait=30).status == "completed"
    [(pid, _, mark, kind)] = runtime.store.recorded_processes()
    assert kind == "claude" and mark.startswith(
        f"{owner_prefix(runtime.store.database_url)}{node.id}/"
    )
    assert process_tree.mark_of(pid) == mark
