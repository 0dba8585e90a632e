"""Fixtures for the dashboard's browser tests: one headless Chromium per module, a fresh
context per test, and a page that records every request URL (none may hold the token).

Loaded with ``pytest_plugins = ("tests.serve_fixtures", "tests.browser_fixtures")``.
Playwright cannot download its own browsers here: it drives Debian's ``chromium``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests

from tests.serve_process import ServeProcess

TOKEN = "aicli_browser-test-token-0123456789abcdef"
# A name an attacker owns, which the browser resolves to this machine (DNS rebinding).
REBOUND_HOST = "attacker.test"
DESKTOP = {"width": 1280, "height": 800}

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
# A task runs the real CLI: give each condition a generous deadline.
expect.set_options(timeout=20_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("needs Chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=[
                f"--host-resolver-rules=MAP {REBOUND_HOST} 127.0.0.1",
                # Chromium's own guard for requests to this machine (Local Network Access)
                # is off, as it is in other browsers: the server must refuse on its own.
                "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessSendPreflights,"
                "BlockInsecurePrivateNetworkRequests",
            ],
        )
        yield launched
        launched.close()


@dataclass
class Recorded:
    """What the page did: every request (``.url``, ``.headers``) and every uncaught script error."""

    requests: list[object] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def viewport() -> dict[str, int]:
    return DESKTOP


@pytest.fixture
def recorded() -> Recorded:
    return Recorded()


@pytest.fixture
def page(browser, viewport, recorded) -> Iterator[object]:
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(20_000)
    opened = context.new_page()

    # A function of ours: Playwright cannot take a builtin such as ``list.append``.
    opened.on("request", lambda request: recorded.requests.append(request))
    opened.on("pageerror", lambda error: recorded.errors.append(str(error)))
    yield opened
    context.close()
    assert recorded.requests, "the page made no request"
    leaked = [request.url for request in recorded.requests if TOKEN in request.url]
    assert not leaked, f"the token appeared in request URLs: {leaked}"
    assert not recorded.errors, f"script errors in the page: {recorded.errors}"


@pytest.fixture
def server(serve) -> ServeProcess:
    return serve(env={"AICLI_API_TOKEN": TOKEN})


class Api:
    """The HTTP API straight from the test, with the token, to set up and to check."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {TOKEN}"

    def call(self, method: str, path: str, **kwargs) -> dict:
        response = self.http.request(method, self.url + path, timeout=30, **kwargs)
        assert response.ok, (response.status_code, response.text)
        return response.json()

    def open_session(self, workdir: str, **fields) -> dict:
        return self.call("POST", "/sessions", json={"workdir": workdir, **fields})

    def submit(self, session_id: str, command: str) -> dict:
        return self.call("POST", f"/sessions/{session_id}/tasks", json={"command": command})

    def events(self, task_id: str) -> list[dict]:
        return self.call("GET", f"/tasks/{task_id}/events")["data"]

    def task(self, task_id: str, wait: float = 0) -> dict:
        return self.call("GET", f"/tasks/{task_id}", params={"wait": wait})


@pytest.fixture
def api(server) -> Api:
    return Api(server.url)


def sign_in_with(page, base_url: str, token: str = TOKEN, hash_: str = "") -> None:
    """Open the dashboard at ``base_url`` (at ``hash_``) and sign in through the form."""
    page.goto(f"{base_url}/ui{hash_}")
    page.locator("#token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#nav")).to_be_visible()


@pytest.fixture
def sign_in():
    """``sign_in(page, base_url, hash_=...)``: through the sign-in form, with the token."""
    return sign_in_with


@pytest.fixture
def token() -> str:
    return TOKEN


@pytest.fixture
def rebound_host() -> str:
    """A name the browser resolves to 127.0.0.1, as an attacker's after DNS rebinding."""
    return REBOUND_HOST
