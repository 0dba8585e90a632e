"""``GET /metrics`` after real traffic: every series an operator needs, with the right values.

Read through ``prometheus_client``'s own parser, so a malformed exposition
fails here too.
"""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from aicli.testing.waiting import wait_for
from tests.http_server import Client, serving

pytest_plugins = ("tests.http_fixtures",)

TOKEN = "metrics-token"


def scrape(client: Client) -> dict[tuple[str, frozenset], float]:
    """Every sample as ``(name, labels) -> value``."""
    text = client.get("/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def client(make_runtime) -> Client:
    with serving(make_runtime(api_token=TOKEN)) as url:
        yield Client(url, token=TOKEN)


def test_pending_approvals_are_counted(client, workdir):
    session = client.open_session(workdir, approvals="ask")
    task = client.submit(session["id"], "[[bash: echo counted > counted.txt]]")
    wait_for(
        lambda: value(scrape(client), "aicli_approvals_pending") == 1,
        timeout=30,
        what="the pending approval in the metrics",
    )
    assert client.delete(f"/tasks/{task['id']}").json()["status"] == "cancelled"
    assert value(scrape(client), "aicli_approvals_pending") == 0


def test_metrics_after_traffic(client, workdir):
    session = client.open_session(workdir)
    done = client.wait_terminal(client.submit(session["id"], "[[say: one]]")["id"])
    failed = client.wait_terminal(client.submit(session["id"], "[[error: 401]]")["id"])
    assert (done["status"], failed["status"]) == ("completed", "failed")
    slow = client.submit(session["id"], "[[slow: 30]] [[say: slow]]")
    client.submit(session["id"], "[[say: queued]]")
    wait_for(
        lambda: client.get(f"/tasks/{slow['id']}").json()["status"] == "running",
        timeout=30,
        what="the slow task to run",
    )
    url = client.base_url
    assert requests.get(f"{url}/tasks/{slow['id']}", timeout=10).status_code == 401
    assert client.get("/tasks/no-such-task").status_code == 404
    assert client.get("/no/such/route").status_code == 404

    samples = scrape(client)
    for status, count in [("completed", 1), ("failed", 1), ("running", 1), ("pending", 1)]:
        assert value(samples, "aicli_tasks", status=status) == count, status
    assert value(samples, "aicli_queue_depth") == 1
    assert value(samples, "aicli_live_claude_processes") == 1
    assert value(samples, "aicli_approvals_pending") == 0
    for status in ("completed", "failed"):
        assert value(samples, "aicli_task_duration_seconds_count", status=status) == 1
        assert value(samples, "aicli_task_duration_seconds_sum", status=status) > 0
    assert value(samples, "aicli_cost_usd_total") == pytest.approx(done["cost_usd"])

    def requests_total(method: str, route: str, status: str, role: str = "admin") -> float | None:
        return value(
            samples,
            "aicli_http_requests_total",
            method=method,
            route=route,
            status=status,
            role=role,
        )

    assert requests_total("POST", "/sessions", "201") == 1
    assert requests_total("POST", "/sessions/{session_id}/tasks", "202") == 4
    assert requests_total("GET", "/tasks/{task_id}", "404") == 1
    # Refused before routing, yet labelled with the route it aimed at.
    assert requests_total("GET", "/tasks/{task_id}", "401", role="none") == 1
    assert requests_total("GET", "/openapi.json", "200") == 1
    assert requests_total("GET", "unmatched", "404") == 1
    count = value(
        samples,
        "aicli_http_request_duration_seconds_count",
        method="POST",
        route="/sessions/{session_id}/tasks",
    )
    assert count == 4
