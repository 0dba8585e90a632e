"""Fixtures of the HTTP tests, loaded with ``pytest_plugins = ("tests.http_fixtures",)``.

Kept apart from the helpers in ``http_server`` so test modules can import those
helpers without pre-empting pytest's loading of these fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aicli import Runtime
from tests.http_server import ROOT_TOKEN, Client, serving


@pytest.fixture
def base_url(runtime: Runtime) -> Iterator[str]:
    with serving(runtime) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Client:
    return Client(base_url)


@pytest.fixture
def workspace_root(tmp_path: Path) -> Path:
    """The admin server's workspace root; a module that needs directories in it overrides this."""
    root = tmp_path / "workspace"
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def url(make_runtime, workspace_root: Path) -> Iterator[str]:
    """A server with a root token (``ROOT_TOKEN``), for the tests of principals and policies."""
    runtime = make_runtime(api_token=ROOT_TOKEN, workspace_root=str(workspace_root))
    with serving(runtime) as base:
        yield base


@pytest.fixture
def admin(url: str) -> Client:
    return Client(url, token=ROOT_TOKEN)
