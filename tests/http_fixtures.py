"""Fixtures of the HTTP tests, loaded with ``pytest_plugins = ("tests.http_fixtures",)``.

Kept apart from the helpers in ``http_server`` so test modules can import those
helpers without pre-empting pytest's loading of these fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aicli import Runtime
from tests.http_server import Client, serving


@pytest.fixture
def base_url(runtime: Runtime) -> Iterator[str]:
    with serving(runtime) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Client:
    return Client(base_url)
