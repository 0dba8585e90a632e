"""Hidden characters made visible where a person decides (``aicli.console.hidden``), and
``aicli approvals`` / ``aicli run`` showing them with a warning, against a real server.

The attack: Claude proposes ``echo hi <U+202E><U+2066>; touch PWNED<U+2069> # ...``,
which a display draws as a harmless comment; Allow runs ``touch PWNED``.
"""

from __future__ import annotations

import json
import subprocess
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aicli.console.hidden import (
    DEFAULT_IGNORABLE,
    hidden_in,
    is_hidden,
    revealed,
    unveiled,
    visible,
    warning,
)
from aicli.console.output import tool_line
from aicli.testing.waiting import wait_for
from tests.test_console import AICLI, aicli, environment, fields, ok, refused, rows

pytest_plugins = ("tests.serve_fixtures",)

RLO, LRI, PDI, ZWSP = "\u202e", "\u2066", "\u2069", "\u200b"
TROJAN = f"echo hi {RLO}{LRI}; touch PWNED{PDI} # {ZWSP}just a comment"
SHOWN = "echo hi <U+202E><U+2066>; touch PWNED<U+2069> # <U+200B>just a comment"
# Every kind the issue names, and then some.
HIDDEN = [
    *map(chr, range(0x202A, 0x202F)),  # embeddings and overrides
    *map(chr, range(0x2066, 0x206A)),  # isolates
    *map(chr, range(0x200B, 0x2010)),  # zero-width space, joiners, LRM, RLM
    "\ufeff",
    "\u00ad",
    "\u061c",
    "\u180e",
    "\u2060",  # BOM, soft hyphen, ALM, MVS, WJ
    "\u2028",
    "\u2029",  # line and paragraph separators
    "\x00",
    "\x1b",
    "\r",
    "\x0b",
    "\x7f",
    "\x85",
    "\x9b",  # C0 (not \t \n), DEL, C1
    "\u115f",
    "\u1160",
    "\u3164",
    "\uffa0",  # Hangul fillers
    "\u034f",
    "\ufe0f",
    "\U000e0100",  # grapheme joiner, variation selectors
    "\U000e0001",
    "\U000e0041",
    "\U000e007f",  # tag characters
    "\ud800",
    "\ue000",
    "\U0010ffff",  # a lone surrogate, private use, unassigned
]
SHOWN_AS_THEY_ARE = ["\t", "\n", " ", "a", "<", ">", "é", "漢", "😀", "\u05d0", "\u00a0"]


def seen(char: str) -> bool:
    """What may reach a person's eyes, said otherwise than ``is_hidden`` does: printable
    (Python's word: no C*, no Z* but the space) or a space of another width, and drawn."""
    if char in "\t\n":
        return True
    printable = char.isprintable() or unicodedata.category(char) == "Zs"
    return printable and char not in DEFAULT_IGNORABLE


pieces = st.one_of(
    st.characters(),
    st.characters(categories=["Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Mn", "Lo"]),
    st.sampled_from([*HIDDEN, "<", "U+", "u+", "202E", "00ab", ">", "<U+0041>", "<u+00ab>"]),
)
texts = st.lists(pieces, max_size=30).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


@pytest.mark.parametrize("char", HIDDEN, ids=lambda char: f"U+{ord(char):04X}")
def test_each_hidden_kind_shows_as_its_code_point(char):
    assert is_hidden(char)
    assert visible(f"a{char}b") == f"a<U+{ord(char):04X}>b"


@pytest.mark.parametrize("char", SHOWN_AS_THEY_ARE, ids=lambda char: f"U+{ord(char):04X}")
def test_what_is_seen_stays_as_it_is(char):
    assert not is_hidden(char)
    assert visible(f"a{char}b") == f"a{char}b"


def test_the_trojan_command_reads_as_what_runs():
    assert visible(TROJAN) == SHOWN


@given(texts)
def test_visible_text_holds_nothing_hidden_and_gives_the_text_back(text):
    shown = visible(text)
    assert all(seen(char) for char in shown), ascii(shown)
    assert unveiled(shown) == text  # so no two texts show the same


def test_a_typed_marker_cannot_pass_for_one():
    assert visible("<U+202E>") == "<U+003C>U+202E>"
    assert visible("<u+202e>") == "<U+003C>u+202e>"
    assert visible(f"<{RLO}U+1234>") == "<<U+202E>U+1234>"
    assert visible("a < b, <U+12 and <U+1234567>") == "a < b, <U+12 and <U+1234567>"
    assert unveiled("<U+110000> <U+003C>U+0041> <U+0041>") == "<U+110000> <U+0041> A"


@given(json_values)
def test_every_string_of_a_json_value_keys_too_is_revealed(value):
    shown = revealed(value)
    for text in _strings(shown):
        assert all(seen(char) for char in text), ascii(text)
    assert _unveil_all(shown) == value
    assert bool(hidden_in(value)) == any(map(is_hidden, "".join(_strings(value))))


def test_the_warning_names_each_hidden_character_once_by_code_point():
    said = warning({"command": TROJAN, f"key{RLO}": [TROJAN, {"deep": "\u3164"}]})
    assert said is not None and "hidden or direction-changing characters" in said
    assert said.endswith(
        "(U+200B ZERO WIDTH SPACE, U+202E RIGHT-TO-LEFT OVERRIDE, U+2066 LEFT-TO-RIGHT "
        "ISOLATE, U+2069 POP DIRECTIONAL ISOLATE, U+3164 HANGUL FILLER)"
    )
    assert warning({"command": "echo hi # <U+202E> typed"}, "Bash", []) is None
    assert "and 2 more" in warning("".join(HIDDEN[:10]))


def test_a_tool_line_shows_hidden_characters_in_keys_and_values():
    assert tool_line("Bash", {"command": TROJAN}).startswith("Bash: echo hi <U+202E><U+2066>;")
    line = tool_line(f"T{ZWSP}", {f"k{LRI}": [f"v{PDI}"]})
    assert line == 'T<U+200B>: {"k<U+2066>":["v<U+2069>"]}'


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in (key, *_strings(item))]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


def _unveil_all(value):
    if isinstance(value, str):
        return unveiled(value)
    if isinstance(value, dict):
        return {unveiled(key): _unveil_all(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unveil_all(item) for item in value]
    return value


# ---------------------------------------------------------------- the terminal client


@pytest.fixture
def database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/aicli.db"


@pytest.fixture
def runs():
    """``runs(url, session_id, prompt)``: an ``aicli run``, killed at the test's end."""
    started: list[subprocess.Popen[str]] = []

    def start(url: str, session_id: str, prompt: str) -> subprocess.Popen[str]:
        args = [AICLI, "run", "--session", session_id, prompt]
        started.append(
            subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=environment(url),
            )
        )
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def pending(url: str) -> subprocess.CompletedProcess[str] | None:
    """``aicli approvals list --status pending`` once it lists one."""
    listed = aicli(url, "approvals", "list", "--status", "pending")
    return listed if listed.stdout.count("\n") > 1 else None


@pytest.mark.cli
def test_approvals_list_show_and_run_show_the_hidden_characters_and_warn(serve, workdir, runs):
    url = serve().url
    session_id = fields(ok(aicli(url, "sessions", "open", workdir, "--approvals", "ask")))["id"]

    def run(name: str, given: dict) -> subprocess.Popen[str]:
        # JSON escapes in the directive: the prompt is plain ASCII, the tool input is not.
        prompt = f"[[tool: {name} {json.dumps(given)}]]"
        return runs(url, session_id, prompt)

    running = run("Bash", {"command": TROJAN})
    listed = wait_for(lambda: pending(url), 30, "a pending approval")
    ((approval_id, row),) = rows(ok(listed)).items()
    assert row["INPUT"] == SHOWN
    warned = f"aicli: warning: approval {approval_id}: the input contains hidden"
    assert warned in listed.stderr and "U+202E RIGHT-TO-LEFT OVERRIDE" in listed.stderr
    shown = aicli(url, "approvals", "show", approval_id)
    assert json.loads(fields(ok(shown))["input"]) == {"command": SHOWN}
    assert warned in shown.stderr
    for text in (listed.stdout, listed.stderr, shown.stdout, shown.stderr):
        assert not any(map(is_hidden, text.replace("\n", "").replace("\t", ""))), ascii(text)
    denied = aicli(url, "approvals", "deny", approval_id)
    assert fields(ok(denied))["status"] == "denied" and warned in denied.stderr
    _, err = running.communicate(timeout=30)
    assert f"? approval {approval_id} asks for Bash: {SHOWN}" in err
    assert warned in err
    assert not (Path(workdir) / "PWNED").exists()

    # A question: shown with markers, and answered by typing what was shown.
    asked = {"question": f"Which{ZWSP} color?", "header": "Color", "multiSelect": False}
    asked["options"] = [
        {"label": f"Red{RLO}", "description": "warm"},
        {"label": "Blue", "description": "cold"},
    ]
    running = run("AskUserQuestion", {"questions": [asked]})
    listed = wait_for(lambda: pending(url), 30, "a pending question")
    ((approval_id, _),) = rows(ok(listed)).items()
    assert f"approval {approval_id}: the input contains hidden" in listed.stderr
    shown = json.loads(fields(ok(aicli(url, "approvals", "show", approval_id)))["input"])
    assert shown["questions"][0]["question"] == "Which<U+200B> color?"
    assert shown["questions"][0]["options"][0]["label"] == "Red<U+202E>"
    # Typed without its hidden character, the question is not the one asked: the refusal
    # names the asked one as it was shown (and is to be typed), not as \u200b.
    mistyped = aicli(url, "approvals", "answer", approval_id, "Which color?=Blue")
    refused(mistyped, 2, "No question 'Which color?' was asked; asked: 'Which<U+200B> color?'")
    answer = "Which<U+200B> color?=Red<U+202E>"
    assert fields(ok(aicli(url, "approvals", "answer", approval_id, answer)))["status"] == "allowed"
    out, err = running.communicate(timeout=30)
    assert running.returncode == 0, err
    assert f"Red{RLO}" in out  # the label itself was the answer: the tool's result says it
