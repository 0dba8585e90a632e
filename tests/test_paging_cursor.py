"""Crafted cursors are 400 naming the field, never 500, on every paged route."""

from __future__ import annotations

import base64

import pytest

from aicli.errors import InvalidRequest
from aicli.storage.paging import decode_cursor
from tests.http_server import error_of

pytest_plugins = ("tests.http_fixtures",)

REFUSED = [
    "v1|0001-01-01T00:00:00+01:00|x",  # before year 1 once in UTC
    "v1|9999-12-31T23:59:59-01:00|x",  # after year 9999 once in UTC
    "v1|9999-12-31T23:59:59.999999-00:00:01|x",  # by a second, with a seconds offset
    "v1|2026-01-01T00:00:00|x",  # no offset
    "v1|2026-01-01|x",  # a date only
    "v1|2026-13-01T00:00:00+00:00|x",  # no such month
    "v1|2026-01-01T00:00:00+00:00|",  # no id
    "v1|2026-01-01T00:00:00+00:00|x|y",  # a field too many
    "v2|2026-01-01T00:00:00+00:00|x",  # another version
]
# Extreme but in range: a page from there, not an error.
ACCEPTED = [
    "v1|0001-01-01T00:00:00-01:00|x",
    "v1|0001-01-01T00:00:00+00:00|x",
    "v1|9999-12-31T23:59:59+01:00|x",
    "v1|9999-12-31T23:59:59.999999+00:00|x",
]


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("text", REFUSED)
def test_decode_refuses_crafted_cursors(text):
    with pytest.raises(InvalidRequest) as raised:
        decode_cursor(cursor_of(text))
    assert raised.value.details == {"field": "cursor"}


@pytest.mark.parametrize("text", ACCEPTED)
def test_decode_accepts_extreme_times_that_stay_in_range(text):
    assert decode_cursor(cursor_of(text)).id == "x"


@pytest.fixture
def routes(client, workdir) -> list[str]:
    session = client.open_session(workdir)
    return ["/tasks", "/sessions", f"/sessions/{session['id']}/tasks"]


def test_crafted_cursors_are_400_naming_the_field_on_every_list(client, routes):
    for route in routes:
        for text in REFUSED:
            response = client.get(route, params={"cursor": cursor_of(text)})
            message = error_of(response, 400, "invalid_request")
            assert "'cursor'" in message, (route, text)
            assert response.json()["error"]["details"] == {"field": "cursor"}


def test_extreme_cursors_in_range_page_normally(client, routes):
    for route in routes:
        for text in ACCEPTED:
            for order in ("asc", "desc"):
                response = client.get(route, params={"cursor": cursor_of(text), "order": order})
                assert response.status_code == 200, (route, text, order, response.text)
