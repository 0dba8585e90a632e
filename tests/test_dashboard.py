"""The dashboard's static files at /ui, without a browser: what is served, with which
headers, to whom, and what the files may not contain (``tests/test_browser.py`` drives them).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from aicli.http import create_app, dashboard
from tests.http_server import local_test_client, serving

TOKEN = "dashboard-t0ken"
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}
UI = Path(dashboard.__file__).with_name("ui")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


@pytest.fixture
def guarded(make_runtime):
    """The app of a runtime with an API token, in Falcon's test client."""
    return local_test_client(create_app(make_runtime(api_token=TOKEN)))


def error_code(result) -> str:
    return result.json["error"]["code"]


def assert_served(result, content_type: str) -> None:
    assert result.status_code == 200, result.text
    headers = result.headers
    assert headers["Content-Type"] == content_type
    assert headers["Content-Security-Policy"] == CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["ETag"]


@pytest.mark.parametrize("path", ["/ui", "/ui/", "/ui/index.html"])
def test_the_page_is_served_without_a_token(guarded, path):
    result = guarded.simulate_get(path)
    assert_served(result, TYPES["index.html"])
    assert result.content == (UI / "index.html").read_bytes()
    assert '<script type="module" src="/ui/app.js">' in result.text


@pytest.mark.parametrize("name", sorted(TYPES))
def test_each_file_is_served_with_its_type_and_the_strict_headers(guarded, name):
    result = guarded.simulate_get(f"/ui/{name}")
    assert_served(result, TYPES[name])
    assert result.content == (UI / name).read_bytes()


def test_the_api_still_needs_the_token(guarded):
    assert guarded.simulate_get("/sessions").status_code == 401
    assert guarded.simulate_get("/me").status_code == 401
    assert guarded.simulate_get("/uix").status_code == 401  # not a dashboard path
    me = guarded.simulate_get("/me", headers=AUTHORIZED)
    assert me.status_code == 200 and me.json["id"] == "root"


@pytest.mark.parametrize(
    "path",
    [
        "/ui/nope.js",
        "/ui/..",
        "/ui/%2e%2e",
        "/ui/..%2fdashboard.py",
        "/ui/../dashboard.py",
        "/ui/ui/app.js",
        "/ui/app.js/x",
        "/ui/.hidden",
        "/ui/dashboard.py",
    ],
)
def test_an_unknown_file_is_the_apis_404(guarded, path):
    result = guarded.simulate_get(path)
    assert result.status_code == 404, (path, result.status_code)
    assert error_code(result) == "not_found"
    assert result.json["error"]["message"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("path", ["/ui", "/ui/", "/ui/app.js", "/ui/nope"])
def test_only_reading_is_served_and_any_other_method_is_405_before_the_token(guarded, method, path):
    """The dashboard's routes have GET and HEAD only; a method a route lacks is 405 for
    anyone, before the token is checked, as on every API route."""
    result = guarded.simulate_request(method, path, json={})
    assert result.status_code == 405, (method, path, result.status_code)
    assert error_code(result) == "method_not_allowed"
    assert result.headers["Allow"] == "GET, HEAD, OPTIONS"


def test_a_method_other_than_get_is_405_once_signed_in(guarded):
    for path in ("/ui", "/ui/app.js"):
        result = guarded.simulate_post(path, json={}, headers=AUTHORIZED)
        assert result.status_code == 405 and error_code(result) == "method_not_allowed"


def test_a_method_other_than_get_is_405_on_an_open_service(make_runtime):
    client = local_test_client(create_app(make_runtime()))
    result = client.simulate_post("/ui", json={})
    assert result.status_code == 405 and error_code(result) == "method_not_allowed"


def test_an_unchanged_file_is_304(guarded):
    etag = guarded.simulate_get("/ui/app.js").headers["ETag"]
    again = guarded.simulate_get("/ui/app.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and not again.content
    assert again.headers["Content-Security-Policy"] == CSP


def test_files_are_read_once_when_the_app_is_made(make_runtime, monkeypatch):
    app = create_app(make_runtime())

    def no_disk(*args, **kwargs):
        raise AssertionError("a request read the disk")

    monkeypatch.setattr(Path, "read_bytes", no_disk)
    monkeypatch.setattr(Path, "open", no_disk)
    client = local_test_client(app)
    assert client.simulate_get("/ui").status_code == 200
    assert client.simulate_get("/ui/app.css").status_code == 200


def test_the_dashboard_is_not_in_the_openapi_document(guarded):
    document = guarded.simulate_get("/openapi.json", headers=AUTHORIZED).json
    assert not [path for path in document["paths"] if path.startswith("/ui")]


def test_over_real_http_too(make_runtime):
    with serving(make_runtime(api_token=TOKEN)) as url:
        page = requests.get(f"{url}/ui/", timeout=10)
        assert page.status_code == 200 and page.headers["Content-Security-Policy"] == CSP
        script = requests.get(f"{url}/ui/app.js", timeout=10)
        assert script.headers["Content-Type"] == TYPES["app.js"]
        assert requests.get(f"{url}/sessions", timeout=10).status_code == 401


# What the files may hold.


def texts() -> dict[str, str]:
    return {path.name: path.read_text() for path in UI.iterdir()}


def test_the_files_ship_flat_in_the_package_folder():
    entries = list(UI.iterdir())
    assert {"index.html", "app.js", "app.css"} <= {path.name for path in entries}
    # setup.cfg ships ``aicli.http = ui/*``: a subfolder would not be packaged.
    assert all(path.is_file() for path in entries)
    assert "aicli.http = ui/*" in (UI.parents[2] / "setup.cfg").read_text()


def test_no_file_loads_anything_from_another_host():
    for name, text in texts().items():
        assert not re.findall(r"(?i)\b(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), name
        assert "@import" not in text, name


def test_the_script_never_writes_markup():
    script = texts()["app.js"]
    for word in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        'setAttribute("style"',
        ".style.",
    ):
        assert word not in script, word
    assert "innerHTML" not in texts()["index.html"]


def test_the_page_has_no_inline_script_or_style():
    page = texts()["index.html"]
    assert re.findall(r"<script\b[^>]*>", page) == ['<script type="module" src="/ui/app.js">']
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+\s*=", page)
    for ref in re.findall(r'(?:src|href)="/ui/([^"]+)"', page):
        assert (UI / ref).is_file(), ref


def test_the_token_goes_only_in_a_header():
    script = texts()["app.js"]
    assert "Authorization" in script and "Bearer" in script
    assert "sessionStorage" in script and "localStorage" not in script
    assert "document.cookie" not in script
    assert not re.search(r"(?i)[?&](access_)?token=", script)
    assert "new EventSource" not in script  # it cannot send the header
