"""The dashboard shows hidden characters where a person decides, in a real Chromium against
a real ``aicli serve`` with the real Claude CLI and the fake Anthropic API.

The attack: Claude proposes ``echo hi <U+202E><U+2066>; touch PWNED<U+2069> # ...``, which
a browser draws as a harmless comment; Allow runs ``touch PWNED``. Each such character must
show as a marked ``<U+XXXX>`` under a warning, in the approval card, in a question's card
and in the task's events: no raw one may be displayed. What the fixtures check after every
test (no token in a URL, no script error) holds here too.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pytest

from aicli.console.hidden import is_hidden, visible

expect = pytest.importorskip("playwright.sync_api").expect

pytest_plugins = ("tests.serve_fixtures", "tests.browser_fixtures")
pytestmark = pytest.mark.cli

RLO, LRI, PDI, ZWSP = "\u202e", "\u2066", "\u2069", "\u200b"
TROJAN = f"echo hi {RLO}{LRI}; touch PWNED{PDI} # {ZWSP}just a comment"
SHOWN = "echo hi <U+202E><U+2066>; touch PWNED<U+2069> # <U+200B>just a comment"
WARNING = "hidden or direction-changing characters"


@pytest.fixture
def database_url(tmp_path) -> str:
    """SQLite only, as in tests/test_browser.py: each server here costs seconds."""
    return f"sqlite:///{tmp_path}/aicli.db"


def tool(name: str, given: dict) -> str:
    """The fake API's directive to propose a tool use; JSON escapes keep the prompt ASCII."""
    return f"[[tool: {name} {json.dumps(given)}]]"


def raw_hidden(text: str) -> list[str]:
    """Hidden characters in displayed text (\\n and \\t are seen as what they are)."""
    return [f"U+{ord(char):04X}" for char in text if is_hidden(char)]


def test_an_approval_card_shows_hidden_characters_and_warns(page, server, api, workdir, sign_in):
    session = api.open_session(workdir, approvals="ask")
    given = {"command": TROJAN, "description": f"list\u3164{LRI}"}
    task = api.submit(session["id"], tool("Bash", given))
    sign_in(page, server.url, hash_="#/approvals")
    card = page.locator("article.approval")
    expect(card).to_have_count(1)
    expect(card.locator(".hidden-warning")).to_contain_text(WARNING)
    expect(card.locator(".hidden-warning")).to_contain_text(
        "(U+200B, U+202E, U+2066, U+2069, U+3164)"
    )
    shown = card.locator("pre.tool-input")
    expect(shown).to_contain_text(SHOWN)
    expect(shown).to_contain_text('"description": "list<U+3164><U+2066>"')
    markers = shown.locator(".hidden-char").all_text_contents()  # side by side: one marker
    assert markers == ["<U+202E><U+2066>", "<U+2069>", "<U+200B>", "<U+3164><U+2066>"], markers
    text = card.evaluate("node => node.textContent")
    assert "touch PWNED" in text and not raw_hidden(text), raw_hidden(text)
    # Drawn in the order the shell reads it: no right-to-left run may reorder it.
    assert shown.evaluate("node => getComputedStyle(node).unicodeBidi") == "bidi-override"

    card.get_by_role("button", name="Deny").click()
    expect(card).to_have_count(0)
    assert api.task(task["id"], wait=30)["status"] == "completed"
    assert not (Path(workdir) / "PWNED").exists()
    # The data is as Claude sent it: only its display changed.
    (approval,) = api.call("GET", "/approvals", params={"task_id": task["id"]})["data"]
    assert approval["input"] == given

    # The task's events: the proposal and the approval request show the same.
    page.goto(f"{server.url}/ui#/tasks/{task['id']}")
    events = page.locator("#events")
    expect(events.locator("li.t-status").last).to_contain_text("completed")
    for item in (events.locator("li.t-approval_requested"), events.locator("li.t-assistant .tool")):
        expect(item.first).to_contain_text(SHOWN)
        expect(item.first.locator(".hidden-warning")).to_contain_text(WARNING)
    text = events.evaluate("node => node.textContent")
    assert not raw_hidden(text), raw_hidden(text)


def test_a_question_shows_hidden_characters_and_the_answer_keeps_them(
    page, server, api, workdir, sign_in
):
    session = api.open_session(workdir, approvals="ask")
    option = f"Red{RLO}"
    question = {
        "question": f"Which{ZWSP} color?",
        "header": f"Col{LRI}or",
        "options": [
            {"label": option, "description": f"warm{PDI}"},
            {"label": "Blue", "description": "cold"},
        ],
        "multiSelect": False,
    }
    task = api.submit(session["id"], tool("AskUserQuestion", {"questions": [question]}))
    sign_in(page, server.url, hash_="#/approvals")
    card = page.locator("article.approval")
    expect(card).to_have_count(1)
    expect(card.locator(".hidden-warning")).to_contain_text(WARNING)
    expect(card.locator("legend")).to_contain_text("Col<U+2066>or Which<U+200B> color?")
    expect(card.locator("label.option").first).to_contain_text("Red<U+202E> — warm<U+2069>")
    text = card.evaluate("node => node.textContent")
    assert not raw_hidden(text), raw_hidden(text)
    card.get_by_label(re.compile(r"^Red<U\+202E>")).check()
    card.get_by_role("button", name="Answer").click()
    expect(card).to_have_count(0)
    # What was chosen is the label itself, hidden character and all.
    (approval,) = api.call("GET", "/approvals", params={"task_id": task["id"]})["data"]
    assert approval["status"] == "allowed"
    assert api.task(task["id"], wait=30)["status"] == "completed"
    answered = json.dumps(api.events(task["id"]), ensure_ascii=False)
    assert option in answered


def test_the_dashboard_hides_nothing_the_terminal_client_shows(page, server):
    """hidden.js names its set with Unicode properties, hidden.py with categories and a list:
    they agree on every code point (but those assigned since Python's Unicode, which Python
    holds unassigned and so hidden)."""
    page.goto(f"{server.url}/ui")
    changed = page.evaluate(
        """async () => {
          const { visibleText } = await import("/ui/hidden.js");
          const found = [];
          for (let code = 0; code <= 0x10ffff; code += 1) {
            const char = String.fromCodePoint(code);
            if (visibleText(char) !== char) found.push(code);
          }
          return found;
        }"""
    )
    samples = ["<U+202E>", "<u+202e> <U+12>", f"a{RLO}{LRI}b", "\ud800x", "\U000e0041", "é\t\n"]
    in_js = page.evaluate(
        """async (samples) => {
          const { visibleText } = await import("/ui/hidden.js");
          return samples.map(visibleText);
        }""",
        samples,
    )
    assert in_js == [visible(sample) for sample in samples], in_js
    in_browser = set(changed)
    in_python = {code for code in range(0x110000) if is_hidden(chr(code))}
    assert not in_browser - in_python, sorted(map(hex, in_browser - in_python))[:20]
    newer = {code for code in in_python - in_browser if unicodedata.category(chr(code)) != "Cn"}
    assert not newer, sorted(map(hex, newer))[:20]


def test_an_approval_card_shows_all_of_a_long_input_without_a_scroll_box(
    page, server, api, workdir, sign_in
):
    """A card can lie by length as well: a command whose harmless start fills the box of a
    capped height, and whose end (``touch PWNED``) is below it, inside a scroll box that
    an overlay scrollbar does not even show. What a person allows is drawn whole."""
    session = api.open_session(workdir, approvals="ask")
    command = "echo " + "a harmless greeting, " * 200 + "; touch PWNED"
    api.submit(session["id"], tool("Bash", {"command": command}))
    sign_in(page, server.url, hash_="#/approvals")
    shown = page.locator("article.approval pre.tool-input")
    expect(shown).to_contain_text("; touch PWNED")
    height, visible_height = shown.evaluate("node => [node.scrollHeight, node.clientHeight]")
    assert height <= visible_height, (height, visible_height)
    page.locator("article.approval").get_by_role("button", name="Deny").click()
    expect(page.locator("article.approval")).to_have_count(0)
