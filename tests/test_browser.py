"""The dashboard at /ui in a real browser, against a real ``aicli serve`` with the real
Claude CLI and the fake Anthropic API.

Every wait is a condition with a deadline (Playwright's auto-waiting ``expect``), never a
bare sleep. Every test's page records its requests; no URL may hold the token
(``tests/browser_fixtures.py`` checks that, and that no script error happened).
"""

from __future__ import annotations

import re
import subprocess

import pytest

from aicli.testing.relay import Relay
from tests.serve_process import AICLI

# Imported here only if Playwright is there (it is a test extra); the fixtures skip otherwise.
expect = pytest.importorskip("playwright.sync_api").expect

pytest_plugins = ("tests.serve_fixtures", "tests.browser_fixtures")
pytestmark = pytest.mark.cli


@pytest.fixture
def database_url(tmp_path) -> str:
    """SQLite only: the clients see the same API on either database (the storage tests
    cover both), and each server here costs seconds."""
    return f"sqlite:///{tmp_path}/aicli.db"


PHONE = {"width": 390, "height": 844}
WRITE = '[[tool: Write {"file_path": "out.txt", "content": "hi"}]]'


def seqs_shown(page) -> list[int]:
    return [
        int(seq)
        for seq in page.locator("#events > li").evaluate_all(
            "items => items.map(item => item.dataset.seq)"
        )
    ]


def no_page_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def sign_in_answer(page):
    """Click Sign in and return the answer to the ``GET /me`` it makes."""
    with page.expect_response(lambda response: response.url.endswith("/me")) as info:
        page.get_by_role("button", name="Sign in").click()
    return info.value


def test_a_wrong_token_shows_an_error_and_stays_on_sign_in(page, server):
    page.goto(f"{server.url}/ui")
    page.locator("#token").fill("not-the-token")
    me = sign_in_answer(page)
    assert me.status == 401
    assert me.request.headers["authorization"] == "Bearer not-the-token"
    expect(page.locator("#alert")).to_be_visible()
    expect(page.locator("#alert")).to_contain_text("That token was not accepted (401)")
    expect(page.locator("#signin-form")).to_be_visible()
    expect(page.locator("#nav")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('aicli.token')") is None
    # No token at all is refused too when the service has one. The first alert is
    # dismissed, so the one checked next can only come from this second attempt.
    page.locator("#alert-close").click()
    expect(page.locator("#alert")).to_be_hidden()
    page.locator("#token").fill("")
    me = sign_in_answer(page)
    assert me.status == 401
    assert "authorization" not in me.request.headers
    expect(page.locator("#alert")).to_be_visible()
    expect(page.locator("#alert")).to_contain_text("That token was not accepted (401)")
    expect(page.locator("#nav")).to_be_hidden()


def test_sign_in_open_a_session_and_see_it_listed(page, server, tmp_path, recorded, token, sign_in):
    workdir = tmp_path / "project"
    workdir.mkdir()
    sign_in(page, server.url)
    expect(page).to_have_url(re.compile(r"#/sessions$"))
    page.locator("#workdir").fill(str(workdir))
    page.get_by_role("button", name="Open session").click()
    row = page.locator("tr.session-row")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(str(workdir))
    expect(row.locator(".badge")).to_have_text("idle")
    expect(page.locator("#alert")).to_contain_text("opened")
    # The token went as a header on the API calls, and survives a reload (sessionStorage).
    sessions = [r for r in recorded.requests if r.url.startswith(f"{server.url}/sessions")]
    assert sessions and all(r.headers["authorization"] == f"Bearer {token}" for r in sessions)
    page.reload()
    expect(page.locator("tr.session-row")).to_have_count(1)
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#signin-form")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('aicli.token')") is None


def test_submit_a_task_and_watch_its_events_live(page, server, api, workdir, sign_in):
    session = api.open_session(workdir)
    sign_in(page, server.url, hash_=f"#/sessions/{session['id']}")
    page.locator("#command").fill("[[say: hello from the browser]]")
    page.get_by_role("button", name="Submit task").click()
    expect(page).to_have_url(re.compile(r"#/tasks/[0-9a-f]+$"))
    task_id = page.url.rpartition("/")[2]
    events = page.locator("#events")
    expect(events.locator("li.t-assistant")).to_contain_text("hello from the browser")
    expect(events.locator("li.t-status").last).to_contain_text("completed")
    expect(page.locator("#task-status")).to_have_text("completed")
    expect(page.locator("#task-output")).to_have_text("hello from the browser")
    expect(page.locator("#stream-state")).to_contain_text("ended")
    assert seqs_shown(page) == [event["seq"] for event in api.events(task_id)]
    # The session's task list shows it too.
    page.get_by_role("link", name=re.compile("session")).first.click()
    expect(page.locator("tr.task-row")).to_have_count(1)
    expect(page.locator("tr.task-row .badge")).to_have_text("completed")


def test_cancel_a_running_task(page, server, api, workdir, sign_in):
    session = api.open_session(workdir)
    task = api.submit(session["id"], "[[slow: 60]] [[say: never seen]]")
    sign_in(page, server.url, hash_=f"#/tasks/{task['id']}")
    expect(page.locator("#task-status")).to_have_text("running")
    page.locator("#cancel-task").click()
    expect(page.locator("#task-status")).to_have_text("cancelled")
    expect(page.locator("#cancel-task")).to_be_hidden()
    expect(page.locator("#events li.t-status").last).to_contain_text("cancelled")
    assert api.task(task["id"])["status"] == "cancelled"


def test_allow_a_tool_use_from_the_approvals_panel(page, server, api, tmp_path, sign_in):
    workdir = tmp_path / "asked"
    workdir.mkdir()
    sign_in(page, server.url)
    page.locator("#workdir").fill(str(workdir))
    page.locator("#approvals").select_option("ask")
    page.get_by_role("button", name="Open session").click()
    page.locator("tr.session-row a").first.click()
    expect(page.locator("dl.details")).to_contain_text("ask")
    page.locator("#command").fill(WRITE)
    page.get_by_role("button", name="Submit task").click()
    expect(page.locator("#events li.t-approval_requested")).to_contain_text("Write")
    task_id = page.url.rpartition("/")[2]
    expect(page.locator("#approval-count")).to_have_text("1")
    page.get_by_role("link", name=re.compile("^Approvals")).click()
    card = page.locator("article.approval")
    expect(card).to_have_count(1)
    expect(card).to_contain_text("Write")
    expect(card.locator("pre")).to_contain_text("out.txt")
    card.get_by_role("button", name="Allow").click()
    expect(page.locator("#alert")).to_contain_text("Allowed Write")
    expect(card).to_have_count(0)
    expect(page.locator("#approval-count")).to_have_text("0")
    page.goto(f"{server.url}/ui#/tasks/{task_id}")
    expect(page.locator("#task-status")).to_have_text("completed")
    expect(page.locator("#events li.t-approval_decided")).to_contain_text("allowed")
    assert (workdir / "out.txt").read_text() == "hi"


def test_answer_a_question_and_see_a_decided_approval_refused(page, server, api, workdir, sign_in):
    session = api.open_session(workdir, approvals="ask")
    task = api.submit(session["id"], "[[ask: Which color? | Red | Blue]]")
    # The panel polls GET /approvals and drops a card that is no longer pending: once the
    # card is shown, no list reaches the page any more, so the card is still there to click
    # after someone else decided. A list is let through only if it was fetched before
    # that: the handler fetches it itself and looks at ``held`` once it has the answer.
    held = []

    def hold_lists(route) -> None:
        if route.request.method != "GET":
            route.fallback()
            return
        response = route.fetch()
        if held:
            route.abort()
        else:
            route.fulfill(response=response)

    page.route(re.compile(r"/approvals\?"), hold_lists)
    sign_in(page, server.url, hash_="#/approvals")
    card = page.locator("article.approval")
    expect(card).to_have_count(1)
    held.append(True)
    expect(card.locator("legend")).to_contain_text("Which color?")
    card.get_by_label(re.compile("^Blue")).check()
    # Someone else answers first: the page says the approval was decided already.
    approval = api.call("GET", "/approvals", params={"status": "pending"})["data"][0]
    api.call(
        "POST",
        f"/approvals/{approval['id']}",
        json={"decision": "allow", "answers": {"Which color?": "Red"}},
    )
    card.get_by_role("button", name="Answer").click()
    expect(page.locator("#alert")).to_contain_text("Already decided")
    done = api.task(task["id"], wait=30)
    assert done["status"] == "completed" and "Red" in done["output"]


def test_the_stream_resumes_after_a_dropped_connection(
    page, server, api, tmp_path, recorded, sign_in
):
    """Cut every connection while the task waits for a person: the page reconnects with
    Last-Event-ID and shows each event exactly once, in order, like the JSON log."""
    workdir = tmp_path / "relayed"
    workdir.mkdir()
    session = api.open_session(str(workdir), approvals="ask")
    with Relay("127.0.0.1", server.port) as relay:
        relayed = f"http://127.0.0.1:{relay.port}"
        sign_in(page, relayed)
        page.goto(f"{relayed}/ui#/sessions/{session['id']}")
        page.locator("#command").fill(WRITE)
        page.get_by_role("button", name="Submit task").click()
        expect(page.locator("#events li.t-approval_requested")).to_have_count(1)
        task_id = page.url.rpartition("/")[2]
        shown_before = seqs_shown(page)
        relay.cut()
        expect(page.locator("#stream-state")).to_contain_text(re.compile(r"^live \(reconnected"))
        approval = api.call("GET", "/approvals", params={"task_id": task_id})["data"][0]
        api.call("POST", f"/approvals/{approval['id']}", json={"decision": "allow"})
        expect(page.locator("#task-status")).to_have_text("completed")
        expect(page.locator("#stream-state")).to_contain_text("ended")
        logged = [event["seq"] for event in api.events(task_id)]
        assert seqs_shown(page) == logged
        assert shown_before == logged[: len(shown_before)]
    streams = [r for r in recorded.requests if r.url.endswith(f"/tasks/{task_id}/events")]
    resumed = [r.headers.get("last-event-id") for r in streams[1:]]
    assert len(streams) >= 2 and resumed and resumed[0] == str(shown_before[-1])
    assert (workdir / "out.txt").exists()


# Streams the page cannot get from the real server, answered by ``page.route`` instead.
EVENTS = re.compile(r"/tasks/[0-9a-f]+/events$")
ODD_EVENTS = (
    'id: 1\ndata: {"seq": 1, "type": "assistant", "data": {"content":'
    ' [null, 7, {"type": "text", "text": "after a null block"}]}}\n\n'
    'id: 2\ndata: {"seq": 2, "type": "tool_result", "data": {"content": "not a list"}}\n\n'
    'id: 3\ndata: {"seq": 3, "type": "status", "data": null}\n\n'
    'id: 4\nevent: odd\ndata: "just a string"\n\n'
)


def test_odd_events_are_shown_raw_and_a_finished_task_stops_reconnecting(
    page, server, api, workdir, sign_in
):
    """Events of an unexpected shape are drawn as their JSON instead of breaking the page,
    and a stream that ends without the terminal event (here: the task is long done) is
    opened once more, for anything in between, and then no more."""
    session = api.open_session(workdir)
    task = api.submit(session["id"], "[[say: done]]")
    assert api.task(task["id"], wait=30)["status"] == "completed"
    streams = []

    def odd_stream(route) -> None:
        streams.append(route.request.headers.get("last-event-id"))
        body = "" if streams[-1] else ODD_EVENTS  # nothing after seq 4
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)

    page.route(EVENTS, odd_stream)
    sign_in(page, server.url, hash_=f"#/tasks/{task['id']}")
    expect(page.locator("#stream-state")).to_have_text("ended (reconnected 1×)")
    assert seqs_shown(page) == [1, 2, 3, 4]
    first = page.locator("#events > li").nth(0)
    expect(first.locator("p.say")).to_have_text("after a null block")
    expect(first.locator("pre.raw")).to_have_text(["null", "7"])
    expect(page.locator("#events > li").nth(1).locator("pre.raw")).to_contain_text("not a list")
    expect(page.locator("#events > li").nth(2).locator("pre.raw")).to_have_text("null")
    expect(page.locator("#events > li.t-odd pre.raw")).to_have_text('"just a string"')
    expect(page.locator("#task-status")).to_have_text("completed")
    assert streams == [None, "4"]


def test_a_401_on_the_event_stream_signs_out(page, server, api, workdir, sign_in):
    session = api.open_session(workdir)
    task = api.submit(session["id"], "[[say: done]]")
    page.route(
        EVENTS,
        lambda route: route.fulfill(
            status=401,
            json={"error": {"code": "unauthorized", "message": "Revoked.", "details": {}}},
        ),
    )
    sign_in(page, server.url)
    page.goto(f"{server.url}/ui#/tasks/{task['id']}")
    expect(page.locator("#signin-form")).to_be_visible()
    expect(page.locator("#alert")).to_contain_text("no longer accepted (401): Revoked.")
    assert page.evaluate("sessionStorage.getItem('aicli.token')") is None


def test_a_malformed_address_shows_not_found(page, server, sign_in):
    sign_in(page, server.url, hash_="#/tasks/%zz")
    expect(page.locator("h1")).to_have_text("Not found")
    expect(page.locator("#alert")).to_contain_text("malformed")
    page.get_by_role("link", name="Go to the sessions").click()
    expect(page.locator("h1")).to_have_text("Sessions")


@pytest.mark.parametrize("viewport", [PHONE], ids=["phone"])
def test_a_phone_sized_screen_has_no_horizontal_scroll(page, server, api, workdir, sign_in):
    session = api.open_session(workdir)
    api.submit(session["id"], "[[say: a long line " + "x" * 300 + "]]")
    sign_in(page, server.url)
    expect(page.locator("tr.session-row")).to_have_count(1)
    assert no_page_scroll(page)
    page.locator("tr.session-row a").first.click()
    expect(page.locator("tr.task-row")).to_have_count(1)
    assert no_page_scroll(page)
    command = page.locator("#command")
    command.click()
    command.fill("[[say: from a phone]]")
    button = page.get_by_role("button", name="Submit task")
    box = button.bounding_box()
    assert box and box["height"] >= 40 and box["x"] + box["width"] <= PHONE["width"]
    button.click()
    expect(page.locator("#task-output")).to_have_text("from a phone")
    assert no_page_scroll(page)
    page.get_by_role("link", name=re.compile("^Approvals")).click()
    expect(page.locator("h1")).to_have_text("Pending approvals")
    assert no_page_scroll(page)


def test_an_open_service_goes_straight_in_and_says_it_is_open(page, serve, recorded, workdir):
    """No sign-in form on an open service: the page asks ``GET /me`` without a token, goes
    in, and keeps a notice that anyone who reaches the service can use it. Its writes
    (a JSON body, a cancel) pass the server's checks of origin and media type."""
    server = serve()
    page.goto(f"{server.url}/ui#/sessions")
    expect(page.locator("#nav")).to_be_visible()
    expect(page.locator("#who")).to_have_text("root (admin)")
    notice = page.locator("#open-notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("This service is open: anyone who can reach it can use it")
    expect(page.locator("#signin-form")).to_have_count(0)
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    page.locator("#workdir").fill(workdir)
    page.get_by_role("button", name="Open session").click()
    expect(page.locator("tr.session-row")).to_have_count(1)
    page.locator("tr.session-row a").first.click()
    page.locator("#command").fill("[[slow: 60]] [[say: never seen]]")
    page.get_by_role("button", name="Submit task").click()
    expect(page.locator("#task-status")).to_have_text("running")
    page.locator("#cancel-task").click()
    expect(page.locator("#task-status")).to_have_text("cancelled")
    writes = [r for r in recorded.requests if r.method in ("POST", "DELETE")]
    assert {r.method for r in writes} == {"POST", "DELETE"}
    for request in writes:
        if request.post_data:
            assert request.headers["content-type"] == "application/json", request.url
    assert all("authorization" not in r.headers for r in recorded.requests)
    page.goto(f"{server.url}/ui#/approvals")
    expect(page.locator("h1")).to_have_text("Pending approvals")
    expect(notice).to_be_visible()


def test_an_open_service_that_closes_asks_for_a_token_and_says_why(
    page, serve, database_url, workdir
):
    """``aicli principals create`` closes an open service while its dashboard is in: the next
    call is a 401, and the page asks for a token saying the service is no longer open, not
    that a token (it never had one) is no longer accepted, nor to leave the token empty."""
    server = serve()
    page.goto(f"{server.url}/ui#/sessions")
    expect(page.locator("#open-notice")).to_be_visible()
    created = subprocess.run(
        [AICLI, "principals", "create", "first", "--admin", "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    page.locator("#workdir").fill(workdir)
    page.get_by_role("button", name="Open session").click()
    expect(page.locator("#token")).to_be_visible()
    expect(page.locator("#open-notice")).to_be_hidden()
    alert = page.locator("#alert")
    expect(alert).to_contain_text("no longer open")
    expect(alert).not_to_contain_text("Your token")
    expect(page.locator("#signin-form")).not_to_contain_text("empty")
    page.locator("#token").fill(created.stdout.strip().splitlines()[-1])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_have_text("first (admin)")


def test_a_service_with_a_token_shows_no_open_notice(page, server, sign_in):
    sign_in(page, server.url)
    expect(page.locator("#open-notice")).to_be_hidden()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
