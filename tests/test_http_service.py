"""Health, readiness, metrics, the OpenAPI document, auth and the shutdown gate over HTTP."""

from __future__ import annotations

import threading

import jsonschema
import requests
from prometheus_client.parser import text_string_to_metric_families

from aicli.contract import SessionCreate, TaskSubmit
from aicli.errors import StorageError
from aicli.http.openapi import ERROR_CODES
from aicli.testing.waiting import wait_for
from tests.http_server import Client, error_of, serving

pytest_plugins = ("tests.http_fixtures",)

ROUTES = {
    "/sessions": {"get", "post"},
    "/sessions/{session_id}": {"get", "delete"},
    "/sessions/{session_id}/tasks": {"get", "post"},
    "/tasks": {"get"},
    "/tasks/{task_id}": {"get", "delete"},
    "/tasks/{task_id}/events": {"get"},
    "/healthz": {"get"},
    "/readyz": {"get"},
    "/metrics": {"get"},
    "/openapi.json": {"get"},
    "/principals": {"get", "post"},
    "/principals/{principal_id}": {"get", "delete", "patch"},
    "/me": {"get"},
    "/me/credentials": {"get", "put", "delete"},
    "/principals/{principal_id}/credentials": {"get", "put", "delete"},
    "/approvals": {"get"},
    "/approvals/{approval_id}": {"get", "post"},
    "/nodes": {"get"},
}


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["database"] == "ok"
    assert ready["claude"][0].isdigit()


def test_readiness_fails_with_the_reason(client, runtime, monkeypatch):
    def database_down():
        raise StorageError("The disk is full.")

    monkeypatch.setattr(runtime.store, "ping", database_down)
    message = error_of(client.get("/readyz"), 503, "unavailable")
    assert "database" in message and "The disk is full" in message
    assert client.get("/healthz").status_code == 200


def test_metrics_are_prometheus_text(client, workdir):
    session = client.open_session(workdir)
    client.wait_terminal(client.submit(session["id"], "[[say: counted]]")["id"])
    response = client.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    text = response.text
    assert 'aicli_tasks{status="completed"} 1.0' in text
    assert "aicli_queue_depth" in text and "aicli_task_duration_seconds_bucket" in text
    wanted = {"method": "POST", "route": "/sessions/{session_id}/tasks", "status": "202"}
    counted = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "aicli_http_requests_total" and wanted.items() <= sample.labels.items()
    ]
    assert counted == [1.0]
    assert "aicli_http_request_duration_seconds_bucket" in text


def test_the_openapi_document_covers_every_route(client):
    document = client.get("/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    assert {path: set(item) - {"parameters"} for path, item in document["paths"].items()} == ROUTES
    jsonschema.Draft202012Validator.check_schema({"$defs": document["components"]["schemas"]})
    schemas = document["components"]["schemas"]
    assert set(schemas["SessionCreate"]["properties"]) == set(SessionCreate.__struct_fields__)
    assert set(schemas["TaskSubmit"]["properties"]) == set(TaskSubmit.__struct_fields__)
    assert schemas["TaskSubmit"]["properties"]["command"]["maxLength"] == 100_000
    assert set(schemas["ErrorDetail"]["properties"]["code"]["enum"]) == set(ERROR_CODES)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            assert "500" in operation["responses"], (method, path)
            assert "401" not in operation["responses"]  # this server has no token
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}


def test_a_token_guards_every_route_but_healthz(make_runtime, workdir):
    token = "s3cret-token"
    with serving(make_runtime(api_token=token)) as url:
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
        for path in ("/sessions", "/tasks", "/readyz", "/metrics", "/openapi.json", "/nowhere"):
            missing = requests.get(url + path, timeout=10)
            assert "Authorization: Bearer" in error_of(missing, 401, "unauthorized")
            assert missing.headers["WWW-Authenticate"] == "Bearer"
            wrong = requests.get(url + path, headers={"Authorization": "Bearer nope"}, timeout=10)
            assert error_of(wrong, 401, "unauthorized") == "The bearer token is not valid."
            basic = requests.get(
                url + path, headers={"Authorization": f"Basic {token}"}, timeout=10
            )
            error_of(basic, 401, "unauthorized")
        client = Client(url, token=token)
        document = client.openapi.document
        assert document["security"] == [{"bearerAuth": []}]
        assert document["paths"]["/healthz"]["get"]["security"] == []
        assert "401" in document["paths"]["/tasks"]["get"]["responses"]
        session = client.open_session(workdir)
        unauthorised = requests.post(
            f"{url}/sessions/{session['id']}/tasks", json={"command": "hi"}, timeout=10
        )
        error_of(unauthorised, 401, "unauthorized")
        assert client.walk("/tasks") == []


def test_while_shutting_down_changes_get_503_and_reads_still_work(make_runtime, workdir):
    runtime = make_runtime()
    with serving(runtime) as url:
        client = Client(url)
        session = client.open_session(workdir)
        task = client.submit(session["id"], "[[slow: 2]] [[say: finishing]]")
        wait_for(
            lambda: client.get(f"/tasks/{task['id']}").json()["status"] == "running",
            timeout=30,
            what="the task to run",
        )
        stopping = threading.Thread(target=runtime.shutdown, kwargs={"grace": 30})
        stopping.start()
        wait_for(lambda: not runtime.accepting, timeout=10, what="shutdown to begin")

        refused = client.post(f"/sessions/{session['id']}/tasks", json={"command": "more"})
        assert "shutting down" in error_of(refused, 503, "unavailable")
        error_of(client.post("/sessions", json={"workdir": workdir}), 503, "unavailable")
        error_of(client.delete(f"/sessions/{session['id']}"), 503, "unavailable")
        assert client.get(f"/sessions/{session['id']}").status_code == 200
        error_of(client.get("/readyz"), 503, "unavailable")

        assert client.wait_terminal(task["id"])["output"] == "finishing"
        stopping.join(timeout=60)
        assert [t["id"] for t in client.walk("/tasks")] == [task["id"]]
