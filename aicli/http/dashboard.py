"""The web dashboard at ``/ui``: static files that drive the public HTTP API from a browser.

What is served: the files directly in ``aicli/http/ui/`` (an HTML page, one
stylesheet, one script), read once when the app is created, as they are small;
no request touches the disk. ``/ui`` (and ``/ui/``: the app strips the slash)
is the page, ``/ui/{name}`` a file of that folder. Only those names exist: a
name is looked up in the dictionary of files read at start, never joined to a
path, so there is nothing to traverse; any other name is the API's 404 body.

Why reading these routes (``GET``, ``HEAD``) needs no token (``middleware.BearerAuth``):
they hold no data, only the code of the page; any other method is 405. The page first
asks ``GET /me`` without a token: an open service answers, and the page goes in and
says the service is open. Otherwise it asks for a token, checks it with ``GET /me`` and
then calls the same public routes any client calls, with the same checks; its requests
are same-origin, and each body is typed ``application/json``, as the middleware requires.

Why no cookie: the page keeps the token in ``sessionStorage`` (this tab only,
gone when it closes) and sends it only as ``Authorization: Bearer`` on its
``fetch`` calls, never in a URL. A browser attaches no such header on its own,
so another site cannot make a signed-in request on the user's behalf: there
is no CSRF surface, and no cookie to protect. On an open service there is no
token to withhold, so the server itself refuses what a page of another origin
asks (``middleware.CrossSite``, and 415 for a body not typed JSON).

Why the strict Content-Security-Policy: the page shows text that comes from
Claude and from tools (file contents, command output), which an attacker may
shape. The script builds the DOM with ``textContent`` only, and the policy is
the second line: no inline script or style, nothing from another origin, no
form posts, no framing. A script injected despite everything could run nothing
and send nothing anywhere but this service.

The dashboard is not part of the API contract: it is left out of the OpenAPI
document (which lists its operations by hand in ``openapi.py``), and its files
may change at any release.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import falcon

from aicli.http.middleware import DASHBOARD_PREFIX

UI_DIR = Path(__file__).with_name("ui")
INDEX = "index.html"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidate every time (cheap: the ETag answers 304), so an upgrade shows at once.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class StaticFile:
    content_type: str
    body: bytes
    etag: str


def load_files() -> dict[str, StaticFile]:
    """Only names with a known type, so a stray file in the folder (an editor's backup,
    a ``.py``) is never served, and never served with a guessed type."""
    files: dict[str, StaticFile] = {}
    for path in sorted(UI_DIR.iterdir()) if UI_DIR.is_dir() else []:
        content_type = CONTENT_TYPES.get(path.suffix.lower())
        if content_type is None or not path.is_file() or path.name.startswith("."):
            continue
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        files[path.name] = StaticFile(content_type, body, etag)
    return files


class _Files:
    def __init__(self, files: dict[str, StaticFile]) -> None:
        self._files = files

    def _serve(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        found = self._files.get(name)
        if found is None:
            raise falcon.HTTPNotFound(description=f"The dashboard has no file {name!r}.")
        for header, value in SECURITY_HEADERS.items():
            resp.set_header(header, value)
        resp.set_header("ETag", found.etag)
        if found.etag in (req.get_header("If-None-Match") or "").replace(" ", "").split(","):
            resp.status = falcon.HTTP_304
            resp.content_type = None  # a 304 has no content, so no type
            return
        resp.content_type = found.content_type
        resp.data = found.body


class DashboardPageResource(_Files):
    """A route of its own because ``/ui/{name}`` does not match ``/ui``: the page's
    address is the short ``/ui``, not ``/ui/index.html``."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._serve(req, resp, INDEX)


class DashboardFileResource(_Files):
    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self._serve(req, resp, name)


def add_routes(app: falcon.App) -> None:
    """The files are read here, once: they are small, and no request should wait on the disk."""
    files = load_files()
    app.add_route(DASHBOARD_PREFIX, DashboardPageResource(files))
    app.add_route(DASHBOARD_PREFIX + "/{name}", DashboardFileResource(files))
