"""A web page of another origin, in Chromium, against an open ``aicli serve``: what it sends
arrives, and changes nothing.

The review's attack: any page the user visits does
``fetch(url, {method: "POST", mode: "no-cors", body: new Blob([json])})``; a Blob with no
type sends no ``Content-Type``, so the browser asks nothing first, and the server read the
body as JSON and opened a session with Bash allowed. Here such a page (another port on
127.0.0.1, and ``localhost``, another site) also sends ``text/plain``, a bodyless POST and
a cancel; and a page of a name rebound to 127.0.0.1 reads what it may. Each time, the test
proves over HTTP that nothing was opened or cancelled, and from the server's metrics that
the requests did reach it (so the browser did not simply refuse to send them).

The attacker's page is served by a little HTTP server of its own on 127.0.0.1 (so the
browser sees a page of this machine, as a local dev server's or a rebound name's would be),
and its requests go over the network to the real server.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

pytest_plugins = ("tests.serve_fixtures", "tests.browser_fixtures")
pytestmark = pytest.mark.cli

# Every request runs to its end (an opaque answer, or a refusal by the browser), and each
# result is kept: a status, or the error's name.
ATTACK = """
async ({target, workdir, taskId}) => {
  const json = JSON.stringify({workdir, allowed_tools: ["Bash"]});
  const attempts = [
    ["blob", `${target}/sessions`, {method: "POST", mode: "no-cors", body: new Blob([json])}],
    ["text", `${target}/sessions`,
      {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: json}],
    ["form", `${target}/sessions`, {method: "POST", mode: "no-cors",
      headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: json}],
    ["bodyless", `${target}/sessions`, {method: "POST", mode: "no-cors"}],
    ["cancel", `${target}/tasks/${taskId}`, {method: "DELETE"}],
    ["cancel-no-cors", `${target}/tasks/${taskId}`, {method: "DELETE", mode: "no-cors"}],
  ];
  const results = {};
  for (const [name, url, init] of attempts) {
    try {
      const response = await fetch(url, init);
      results[name] = response.type === "opaque" ? "opaque" : response.status;
    } catch (error) {
      results[name] = error.name;
    }
  }
  return results;
}
"""
REBOUND = """
async ({workdir}) => {
  const results = {};
  const list = await fetch("/sessions");
  results.list = [list.status, await list.text()];
  const opened = await fetch("/sessions", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify({workdir})});
  results.open = [opened.status, await opened.text()];
  return results;
}
"""


class EvilPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        body = b"<!doctype html><p>cats</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def evil_port() -> Iterator[int]:
    """The port of the attacker's page server on 127.0.0.1."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), EvilPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def requests_seen(url: str, method: str, route: str) -> dict[str, float]:
    """How many ``method route`` requests the server answered, by status (from /metrics)."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    pattern = re.compile(
        r'^aicli_http_requests_total\{method="'
        + method
        + r'",role="[a-z]+",route="'
        + re.escape(route)
        + r'",status="(\d+)"\} (\S+)$',
        re.MULTILINE,
    )
    seen: dict[str, float] = {}
    for status, count in pattern.findall(text):
        seen[status] = seen.get(status, 0) + float(count)
    return seen


def running_task(url: str, workdir: str) -> tuple[str, str]:
    session = requests.post(f"{url}/sessions", json={"workdir": workdir}, timeout=10).json()
    task = requests.post(
        f"{url}/sessions/{session['id']}/tasks",
        json={"command": "[[slow: 60]] [[say: still here]]"},
        timeout=10,
    ).json()
    return session["id"], task["id"]


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost"], ids=["other-port", "other-site"])
def test_a_page_of_another_origin_opens_nothing_and_cancels_nothing(
    page, serve, workdir, evil_port, name
):
    server = serve()  # open: no token, no principal
    session_id, task_id = running_task(server.url, workdir)
    page.goto(f"http://{name}:{evil_port}/")
    results = page.evaluate(ATTACK, {"target": server.url, "workdir": workdir, "taskId": task_id})
    # A cancel from another origin needs the server's leave first, which it never gives.
    assert results["cancel"] == "TypeError" and results["cancel-no-cors"] == "TypeError"
    assert {results[name] for name in ("blob", "text", "form", "bodyless")} == {"opaque"}

    sessions = requests.get(f"{server.url}/sessions", timeout=10).json()["data"]
    assert [s["id"] for s in sessions] == [session_id], "the page opened a session"
    task = requests.get(f"{server.url}/tasks/{task_id}", timeout=10).json()
    assert task["status"] in ("pending", "running"), task
    # The four POSTs reached the server and were refused there, not by the browser.
    assert requests_seen(server.url, "POST", "/sessions").get("403") == 4
    requests.delete(f"{server.url}/tasks/{task_id}", timeout=10)


def test_a_page_of_a_rebound_name_reads_nothing_and_opens_nothing(
    page, serve, workdir, rebound_host
):
    """DNS rebinding: the attacker's name now resolves to 127.0.0.1, so its page is
    same-origin to the server's port and may read the answers, but they are 421."""
    server = serve()
    session_id, task_id = running_task(server.url, workdir)
    # While the name still pointed at the attacker's server, its page was loaded; the
    # server's own port serves it here, at the rebound name (the page is then refused: 421).
    page.route(
        f"http://{rebound_host}:{server.port}/",
        lambda route: route.fulfill(status=200, content_type="text/html", body="<p>cats</p>"),
    )
    page.goto(f"http://{rebound_host}:{server.port}/")
    results = page.evaluate(REBOUND, {"workdir": workdir})
    for status, body in results.values():
        assert status == 421 and '"misdirected_request"' in body, (status, body)
        assert session_id not in body and workdir not in body
    sessions = requests.get(f"{server.url}/sessions", timeout=10).json()["data"]
    assert [s["id"] for s in sessions] == [session_id]
    requests.delete(f"{server.url}/tasks/{task_id}", timeout=10)
