"""PostgreSQL connections that die under the store: a fresh one, once, or 503; never a 500.

Each test names its connections (``application_name``) and terminates only
those, so tests running at the same time on the same server are left alone.
Dead pooled connections are made to look alive (``PG_TRUST_S``), as one
returned to the pool less than a second ago does: the worst case, where only
a failing statement reveals the death.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any

import falcon
import falcon.testing
import psycopg2
import pytest

from aicli.errors import DatabaseUnavailable, StorageError
from aicli.http import errors as http_errors
from aicli.storage import Store, open_store
from aicli.storage import database as storage_database
from aicli.testing.postgres import fresh_schema_url
from aicli.testing.waiting import wait_for
from tests.http_server import Client, serving

pytest_plugins = ("tests.storage_fixtures",)


class Backends:
    """Terminates the test's own server sessions, from a connection of its own."""

    def __init__(self, admin_url: str, name: str) -> None:
        self.name = name
        self._admin = psycopg2.connect(admin_url)
        self._admin.autocommit = True

    def _pids(self) -> list[int]:
        with self._admin.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = %s AND pid <> pg_backend_pid()",
                (self.name,),
            )
            return [pid for (pid,) in cursor.fetchall()]

    def terminate(self, pids: list[int] | None = None) -> int:
        """End the given sessions (default: all the test's); returns once they are gone."""
        pids = self._pids() if pids is None else pids
        with self._admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s) AS pid", (pids,))
        wait_for(lambda: not set(pids) & set(self._pids()), what="the sessions to end")
        return len(pids)

    def close(self) -> None:
        self._admin.close()


@pytest.fixture
def app_name() -> str:
    return f"aicli-test-{secrets.token_hex(4)}"


@pytest.fixture
def named_url(postgres_database: str, app_name: str) -> str:
    return f"{fresh_schema_url(postgres_database)}&application_name={app_name}"


@pytest.fixture
def backends(postgres_database: str, app_name: str) -> Iterator[Backends]:
    killer = Backends(postgres_database, app_name)
    yield killer
    killer.close()


@pytest.fixture
def trusting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage_database, "PG_TRUST_S", 3600.0)


@pytest.fixture
def store(named_url: str, trusting: None) -> Iterator[Store]:
    opened = open_store(named_url)
    yield opened
    opened.close()


def own_pid(store: Store) -> int:
    return store.engine.execute("SELECT pg_backend_pid()").fetchone()[0]


def pool_of(store: Store, size: int) -> None:
    """Leave ``size`` idle connections in the pool: as many calls at once, then none."""
    together = threading.Barrier(size)
    workers = [
        threading.Thread(target=store.engine.read, args=(lambda: together.wait(10),))
        for _ in range(size)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


@pytest.mark.postgres
def test_reads_and_writes_outlive_a_pool_of_terminated_connections(
    store: Store, backends: Backends
) -> None:
    session = store.create_session(workdir="/")
    pool_of(store, 4)
    assert backends.terminate() == 4
    assert store.get_session(session.id) == session
    other = store.create_session(workdir="/")
    assert backends.terminate() >= 1
    assert store.get_session(other.id) == other


@pytest.mark.postgres
def test_a_write_that_lost_its_connection_before_commit_runs_again(
    store: Store, backends: Backends
) -> None:
    attempts: list[int] = []

    def work() -> Any:
        attempts.append(own_pid(store))
        if len(attempts) == 1:
            backends.terminate([attempts[0]])
        return store.create_session(workdir="/")

    session = store.engine.write(work)
    assert len(attempts) == 2 and attempts[0] != attempts[1]
    assert [s.id for s in store.list_sessions().data] == [session.id]


@pytest.mark.postgres
def test_a_write_whose_commit_got_no_answer_is_not_run_again(
    store: Store, backends: Backends
) -> None:
    attempts: list[str] = []

    def work() -> None:
        attempts.append(store.create_session(workdir="/").id)
        backends.terminate([own_pid(store)])  # what is left is COMMIT, on a dead connection

    with pytest.raises(DatabaseUnavailable, match="may or may not have been saved") as caught:
        store.engine.write(work)
    assert len(attempts) == 1
    assert caught.value.code == "unavailable" and caught.value.retry_after == 1
    assert caught.value.details["committed"] == "unknown"
    store.ping()


@pytest.mark.postgres
def test_a_read_gets_one_fresh_connection_then_503(store: Store, backends: Backends) -> None:
    attempts: list[int] = []

    def work() -> Any:
        attempts.append(own_pid(store))
        backends.terminate([attempts[-1]])
        return store.engine.execute("SELECT 1").fetchone()

    with pytest.raises(DatabaseUnavailable, match="failed: server closed the connection"):
        store.engine.read(work)
    assert len(attempts) == 2
    store.ping()


def test_an_unreachable_server_is_unavailable_and_still_a_storage_error() -> None:
    with pytest.raises(DatabaseUnavailable, match="Connection refused") as caught:
        open_store("postgresql://postgres@127.0.0.1:1/none")
    assert isinstance(caught.value, StorageError)


@pytest.mark.postgres
def test_http_answers_as_usual_after_the_connections_were_terminated(
    make_runtime: Callable[..., Any], named_url: str, backends: Backends, trusting: None, workdir
) -> None:
    with serving(make_runtime(database_url=named_url)) as url:
        client = Client(url)
        session = client.open_session(workdir)
        assert backends.terminate() >= 1
        assert client.get(f"/sessions/{session['id']}").status_code == 200
        backends.terminate()
        client.open_session(workdir)
        backends.terminate()
        assert client.get("/tasks").status_code == 200


def test_a_database_outage_is_503_with_retry_after_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Outage:
        def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
            raise DatabaseUnavailable("The connection to the database at X failed: gone.")

    app = falcon.App()
    http_errors.install(app)
    app.add_route("/", Outage())
    with caplog.at_level(logging.INFO):
        response = falcon.testing.TestClient(app).simulate_get("/")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json["error"]["code"] == "unavailable"
    [line] = caplog.records
    assert line.levelno == logging.WARNING and "failed: gone" in line.getMessage()
    assert not line.exc_info
