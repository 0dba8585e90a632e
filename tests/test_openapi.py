"""The OpenAPI document without a server: valid, built from the contract, exact, and docs/api.md.

Every HTTP test checks real responses against the document (``tests/http_server.py``) and
``tests/test_fuzz.py`` checks that the server takes every request it allows; these tests
check the document itself, and that the reference in the repository is rendered from it.
"""

from __future__ import annotations

import datetime
import os
import re
import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openapi_spec_validator import validate

from aicli import contract, validation
from aicli.http.openapi import REF, build_document
from aicli.settings import Settings
from aicli.storage import paging

REPO = Path(__file__).resolve().parents[1]
CONFIGURED = Settings(
    api_token="t0ken", workspace_root=str(REPO), max_command_chars=10, max_body_bytes=2048
)
DOCUMENT = build_document(Settings())
SCHEMAS = DOCUMENT["components"]["schemas"]
RESPONSES = {
    "Session": contract.Session,
    "SessionPage": contract.Page,
    "Task": contract.Task,
    "TaskPage": contract.Page,
    "EventPage": contract.EventPage,
    "Event": contract.Event,
    "Error": contract.ErrorBody,
    "ErrorDetail": contract.ErrorDetail,
}


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def parameter(operation_id: str, name: str) -> dict[str, Any]:
    found = {op["operationId"]: op for _, _, op in operations(DOCUMENT)}[operation_id]
    return next(p["schema"] for p in found["parameters"] if p["name"] == name)


@pytest.mark.parametrize("settings", [Settings(), CONFIGURED], ids=["default", "configured"])
def test_the_document_is_valid_openapi(settings):
    validate(build_document(settings))


def test_every_reference_resolves_and_every_schema_is_used():
    used = {ref.removeprefix(REF.format(name="")) for ref in refs(DOCUMENT)}
    assert used == set(SCHEMAS)


def test_links_name_operations_and_their_parameters():
    by_id = {op["operationId"]: op for _, _, op in operations(DOCUMENT)}
    links = [
        link
        for _, _, op in operations(DOCUMENT)
        for response in op["responses"].values()
        for link in response.get("links", {}).values()
    ]
    assert len(links) >= 8
    for link in links:
        names = {p["name"] for p in by_id[link["operationId"]]["parameters"]}
        assert set(link["parameters"]) <= names, link


def test_request_schemas_are_the_contracts_own():
    for kind in (contract.SessionCreate, contract.TaskSubmit):
        expected = msgspec.json.schema_components([kind], ref_template=REF)[1]
        assert SCHEMAS[kind.__name__] == expected[kind.__name__]


def test_responses_have_every_field_always_and_no_other():
    for name, kind in RESPONSES.items():
        schema = SCHEMAS[name]
        assert schema["required"] == list(kind.__struct_fields__), name
        assert schema["additionalProperties"] is False, name
        assert all("default" not in field for field in schema["properties"].values()), name


def test_every_time_is_written_one_way():
    written = SCHEMAS["Event"]["properties"]["created_at"]["pattern"]
    on_the_second = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    for value in (contract.utcnow(), on_the_second.replace(microsecond=1)):
        assert re.fullmatch(written, contract.encode(value).decode().strip('"'))


def test_the_settings_shape_the_document():
    document = build_document(CONFIGURED)
    schemas = document["components"]["schemas"]
    assert schemas["TaskSubmit"]["properties"]["command"]["maxLength"] == 10
    workdir = schemas["SessionCreate"]["properties"]["workdir"]
    assert workdir["examples"] == [os.path.realpath(REPO)]
    assert document["security"] == [{"bearerAuth": []}]
    for method, path, operation in operations(document):
        if "requestBody" in operation:
            assert "2048 bytes" in operation["requestBody"]["description"]
        assert ("401" in operation["responses"]) == (path != "/healthz"), (method, path)
    assert "security" not in DOCUMENT
    assert all("401" not in op["responses"] for _, _, op in operations(DOCUMENT))
    command = SCHEMAS["TaskSubmit"]["properties"]["command"]
    assert command["maxLength"] == contract.MAX_COMMAND_CHARS


def test_the_cursor_is_what_the_store_takes():
    assert parameter("listTasks", "cursor")["pattern"] == f"^{paging._CURSOR_ALPHABET.pattern}$"


def real_date(text: str) -> bool:
    try:
        datetime.date.fromisoformat(text[:10])
    except ValueError:
        return False
    return True


@given(st.from_regex(contract.TIME, fullmatch=True).filter(real_date))
def test_every_time_the_document_allows_is_read(text):
    validation.parse_time(text, "created_after")


@given(st.from_regex(parameter("listTasks", "status")["pattern"], fullmatch=True))
def test_every_status_list_the_document_allows_is_read(text):
    assert validation.parse_statuses(text, tuple(contract.TaskStatus), "status")


def test_the_reference_is_up_to_date():
    api_docs = runpy.run_path(str(REPO / "scripts" / "api_docs.py"))
    rendered = api_docs["render"](build_document(api_docs["SETTINGS"]))
    current = (REPO / "docs" / "api.md").read_text()
    assert current == rendered, (
        "docs/api.md is out of date: run .venv/bin/python scripts/api_docs.py"
    )


@pytest.mark.parametrize("settings", [Settings(), CONFIGURED], ids=["open", "configured"])
def test_every_operation_documents_the_refusals_it_can_get(settings):
    """421 (a Host of another server) anywhere, 403 on every change (a page of another
    origin) and on the admins' routes, 415 wherever a body can come, 401 with a token."""
    document = build_document(settings)
    for method, path, operation in operations(document):
        statuses = set(operation["responses"])
        assert "421" in statuses, (method, path)
        if method in ("post", "delete"):
            assert {"403", "415"} <= statuses, (method, path)
        if settings.api_token and path != "/healthz":
            assert "401" in statuses, (method, path)
    assert "403" in document["paths"]["/metrics"]["get"]["responses"]
    assert "misdirected_request" in SCHEMAS["ErrorDetail"]["properties"]["code"]["enum"]
