"""A session's CLI transcript: stored in the database as chunks, written back on another node.

The store half runs on SQLite and PostgreSQL: chunks tile the transcript exactly, a
retried append is harmless, a gap or a splice is refused. The file half pins the
CLI's own naming of its project directories (values measured with the real CLI
2.1.330), and the last tests move a conversation through the store with the real CLI.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aicli.actors.claude_process import build_argv
from aicli.actors.transcript_files import (
    config_dir,
    find_transcript,
    project_dir_name,
    read_new,
    restore,
    transcript_path,
)
from aicli.contract import SessionSettings
from aicli.errors import SessionNotFound, StorageError
from aicli.storage import Store, open_store
from aicli.storage.transcripts import Transcripts
from aicli.testing.fake_anthropic import FakeAnthropic

pytest_plugins = ("tests.storage_fixtures",)

CLI = "cli-session-1"


@pytest.fixture
def transcripts(store: Store) -> Transcripts:
    return store.transcripts


@pytest.fixture
def session_id(store: Store, tmp_path: Path) -> str:
    return store.create_session(workdir=str(tmp_path)).id


# the store


def test_a_transcript_never_stored_is_empty(transcripts, session_id):
    assert transcripts.stored_size(session_id, CLI) == 0
    assert transcripts.load(session_id, CLI) == b""


def test_appends_tile_the_transcript_in_order(transcripts, session_id):
    assert transcripts.append(session_id, CLI, 0, b'{"a": 1}\n') == 9
    assert transcripts.append(session_id, CLI, 9, b'{"b": 2}\n{"c": 3}\n') == 27
    assert transcripts.stored_size(session_id, CLI) == 27
    assert transcripts.load(session_id, CLI) == b'{"a": 1}\n{"b": 2}\n{"c": 3}\n'


def test_a_retried_append_changes_nothing(transcripts, session_id):
    transcripts.append(session_id, CLI, 0, b"one\n")
    transcripts.append(session_id, CLI, 4, b"two\n")
    assert transcripts.append(session_id, CLI, 4, b"two\n") == 8  # the last one again
    assert transcripts.append(session_id, CLI, 0, b"one\n") == 8  # or an older one
    assert transcripts.load(session_id, CLI) == b"one\ntwo\n"
    assert _chunk_count(transcripts, session_id) == 2


@pytest.mark.parametrize(
    ("offset", "data", "says"),
    [
        (9, b"gap\n", "leave a gap"),
        (4, b"TWO\n", "overwrite stored bytes"),  # same place, other bytes
        (4, b"two\nthree\n", "overwrite stored bytes"),  # a longer read of the same place
        (2, b"e\n", "overwrite stored bytes"),
        (-1, b"x\n", "overwrite stored bytes"),
    ],
)
def test_an_append_that_would_not_tile_is_refused(transcripts, session_id, offset, data, says):
    transcripts.append(session_id, CLI, 0, b"one\n")
    transcripts.append(session_id, CLI, 4, b"two\n")
    with pytest.raises(StorageError, match=says) as refused:
        transcripts.append(session_id, CLI, offset, data)
    assert "holds 8 bytes" in str(refused.value)
    assert refused.value.details["stored_size"] == 8
    assert transcripts.load(session_id, CLI) == b"one\ntwo\n"


def test_empty_data_stores_nothing(transcripts, session_id):
    assert transcripts.append(session_id, CLI, 0, b"") == 0
    transcripts.append(session_id, CLI, 0, b"x\n")
    assert transcripts.append(session_id, CLI, 77, b"") == 2
    assert _chunk_count(transcripts, session_id) == 1


def test_transcripts_are_kept_apart(store, transcripts, session_id, tmp_path):
    other_session = store.create_session(workdir=str(tmp_path)).id
    transcripts.append(session_id, CLI, 0, b"mine\n")
    transcripts.append(session_id, "cli-session-2", 0, b"a later one\n")
    transcripts.append(other_session, CLI, 0, b"theirs, same CLI id\n")
    assert transcripts.load(session_id, CLI) == b"mine\n"
    assert transcripts.load(session_id, "cli-session-2") == b"a later one\n"
    assert transcripts.load(other_session, CLI) == b"theirs, same CLI id\n"
    assert transcripts.stored_size(other_session, CLI) == 20


def test_megabytes_of_any_bytes_come_back_as_they_went(transcripts, session_id):
    first = bytes(range(256)) * 8192 + b"\n"  # 2 MiB and a bit, every byte value
    second = os.urandom(3 << 20) + b"\n"
    transcripts.append(session_id, CLI, 0, first)
    assert transcripts.append(session_id, CLI, len(first), second) == len(first) + len(second)
    loaded = transcripts.load(session_id, CLI)
    assert type(loaded) is bytes and loaded == first + second
    assert transcripts.stored_size(session_id, CLI) == len(first) + len(second)


def test_an_append_for_a_missing_session_is_refused(transcripts):
    with pytest.raises(SessionNotFound):
        transcripts.append("no-such-session", CLI, 0, b"x\n")


def test_a_load_refuses_chunks_that_do_not_tile(transcripts, session_id):
    transcripts.append(session_id, CLI, 0, b"one\n")
    engine = transcripts._engine
    sql = (
        'INSERT INTO transcript_chunks (session_id, claude_session_id, "offset", data)'
        " VALUES (?, ?, ?, ?)"
    )
    engine.write(lambda: engine.execute(sql, (session_id, CLI, 10, b"later\n")))
    with pytest.raises(StorageError, match="at offset 10 where 4 was expected"):
        transcripts.load(session_id, CLI)


def test_nodes_racing_for_one_offset_store_one_chunk(transcripts, session_id):
    """Each round, two writers append different bytes at the same offset at once."""
    size = 0
    for round_ in range(8):
        pieces = [f"round {round_} by {who}\n".encode() for who in ("a", "b")]
        outcomes = _race(lambda p, at=size: transcripts.append(session_id, CLI, at, p), pieces)
        won = [p for p in pieces if isinstance(outcomes[p], int)]
        assert len(won) == 1, outcomes
        size += len(won[0])
        assert outcomes[won[0]] == size
    assert transcripts.stored_size(session_id, CLI) == size
    assert len(transcripts.load(session_id, CLI)) == size


def test_nodes_racing_with_the_same_bytes_both_succeed(transcripts, session_id):
    outcomes = _race(lambda who: transcripts.append(session_id, CLI, 0, b"same\n"), ["a", "b"])
    assert outcomes == {"a": 5, "b": 5}
    assert _chunk_count(transcripts, session_id) == 1


def _race(append: Callable[[Any], int], callers: list[Any]) -> dict[Any, Any]:
    """``append(caller)`` for each caller, released at once; each one's size or error."""
    barrier = threading.Barrier(len(callers))
    outcomes: dict[Any, Any] = {}

    def run(caller: Any) -> None:
        barrier.wait()
        try:
            outcomes[caller] = append(caller)
        except StorageError as exc:
            outcomes[caller] = exc

    threads = [threading.Thread(target=run, args=(c,)) for c in callers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def _chunk_count(transcripts: Transcripts, session_id: str) -> int:
    engine = transcripts._engine
    sql = "SELECT COUNT(*) FROM transcript_chunks WHERE session_id = ?"
    return engine.read(lambda: engine.execute(sql, (session_id,)).fetchone()[0])


# where the CLI keeps it


def test_the_config_dir_is_claude_config_dir_else_home_dot_claude(monkeypatch):
    assert config_dir({"CLAUDE_CONFIG_DIR": "/cfg", "HOME": "/h"}) == Path("/cfg")
    assert config_dir({"HOME": "/h"}) == Path("/h/.claude")
    assert config_dir({"CLAUDE_CONFIG_DIR": "", "HOME": "/h"}) == Path(".")  # the CLI's cwd
    decomposed = unicodedata.normalize("NFD", "/café")
    assert config_dir({"CLAUDE_CONFIG_DIR": decomposed}) == Path("/caf\u00e9")  # as the CLI
    monkeypatch.setattr("pwd.getpwuid", lambda uid: type("pw", (), {"pw_dir": "/pw"}))
    assert config_dir({}) == config_dir({"HOME": ""}) == Path("/pw/.claude")


# Names the real CLI 2.1.330 gave these working directories (see the module docstring).
MEASURED = [
    ("/tmp/expbe1tbpga/plain", "-tmp-expbe1tbpga-plain"),
    ("/tmp/expbe1tbpga/with.dots", "-tmp-expbe1tbpga-with-dots"),
    ("/tmp/expbe1tbpga/under_score", "-tmp-expbe1tbpga-under-score"),
    ("/tmp/expbe1tbpga/with space", "-tmp-expbe1tbpga-with-space"),
    ("/tmp/expbe1tbpga/a-b--c", "-tmp-expbe1tbpga-a-b--c"),
    ("/tmp/expbe1tbpga/MiXeD", "-tmp-expbe1tbpga-MiXeD"),
    ("/tmp/expbe1tbpga/sym@#%+=,~!$&'()", "-tmp-expbe1tbpga-sym-------------"),
    ("/tmp/expbe1tbpga/\u00fcn\u00ef-c\u00f6d\u00e9", "-tmp-expbe1tbpga--n--c-d-"),
    ("/tmp/expbe1tbpga/\u65e5\u672c\u8a9e", "-tmp-expbe1tbpga----"),
    ("/tmp/exphscfbq4f/emo\U0001f600x", "-tmp-exphscfbq4f-emo--x"),  # two UTF-16 units
    ("/tmp/exphscfbq4f/e\u0301", "-tmp-exphscfbq4f-e-"),  # no normalisation
    ("/tmp/exphscfbq4f/" + "b" * 183, "-tmp-exphscfbq4f-" + "b" * 183),  # 200: kept whole
    ("/tmp/exphscfbq4f/" + "a" * 184, "-tmp-exphscfbq4f-" + "a" * 183 + "-nb0aly"),
    (
        "/tmp/expbe1tbpga/" + "x" * 80 + "/" + "y" * 80 + "/" + "z" * 80,
        "-tmp-expbe1tbpga-" + "x" * 80 + "-" + "y" * 80 + "-" + "z" * 21 + "-bgqxg5",
    ),
]


@pytest.mark.parametrize(("workdir", "name"), MEASURED)
def test_the_project_dir_is_named_as_the_cli_names_it(workdir, name):
    assert project_dir_name(workdir) == name


def test_the_project_dir_is_the_physical_directory(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert project_dir_name(str(tmp_path / "link")) == project_dir_name(str(real))
    assert project_dir_name(f"{real}/") == project_dir_name(str(real))


def test_a_project_dir_name_override_needs_a_config_dir_and_a_plain_name():
    workdir = "/tmp/expbe1tbpga/plain"
    named = {"CLAUDE_CONFIG_DIR": "/cfg", "CLAUDE_CODE_PROJECT_DIR_NAME": "my_proj-1"}
    assert project_dir_name(workdir, named) == "my_proj-1"
    unconfigured = {"CLAUDE_CODE_PROJECT_DIR_NAME": "my_proj-1"}
    assert project_dir_name(workdir, unconfigured) == "-tmp-expbe1tbpga-plain"
    for bad in ("", "a/b", "a.b", "x" * 65, "con", "LPT1"):
        env = {"CLAUDE_CONFIG_DIR": "/cfg", "CLAUDE_CODE_PROJECT_DIR_NAME": bad}
        assert project_dir_name(workdir, env) == "-tmp-expbe1tbpga-plain", bad


def test_the_transcript_path_joins_config_project_and_id(tmp_path):
    workdir = str(tmp_path)
    project = project_dir_name(workdir)
    absolute = transcript_path(Path("/cfg"), workdir, "abc")
    assert absolute == Path(f"/cfg/projects/{project}/abc.jsonl")
    relative = transcript_path(Path("rel"), workdir, "abc")  # the CLI's cwd's, as measured
    assert relative == tmp_path / "rel" / "projects" / project / "abc.jsonl"
    env = {"CLAUDE_CONFIG_DIR": "/cfg", "CLAUDE_CODE_PROJECT_DIR_NAME": "p"}
    assert transcript_path(Path("/cfg"), workdir, "abc", env) == Path("/cfg/projects/p/abc.jsonl")


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "a\0b"])
def test_an_id_that_would_name_another_file_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="Not a Claude session id"):
        transcript_path(tmp_path, str(tmp_path), bad)
    with pytest.raises(ValueError, match="Not a Claude session id"):
        find_transcript(tmp_path, bad)


def test_find_transcript_looks_in_every_project(tmp_path):
    assert find_transcript(tmp_path, "abc") is None
    old = _write(tmp_path / "projects" / "-one" / "abc.jsonl", b"1\n")
    _write(tmp_path / "projects" / "-one" / "other.jsonl", b"2\n")
    assert find_transcript(tmp_path, "abc") == old
    new = _write(tmp_path / "projects" / "-two" / "abc.jsonl", b"1\n2\n")
    os.utime(old, (time.time() - 60, time.time() - 60))
    assert find_transcript(tmp_path, "abc") == new  # the latest written


def test_find_transcript_takes_glob_characters_literally(tmp_path):
    _write(tmp_path / "projects" / "-p" / "a1.jsonl", b"x\n")
    assert find_transcript(tmp_path, "a?") is None
    assert find_transcript(tmp_path, "a*") is None
    found = _write(tmp_path / "projects" / "-p" / "a[1].jsonl", b"x\n")
    assert find_transcript(tmp_path, "a[1]") == found


def test_read_new_takes_whole_lines_after_the_offset(tmp_path):
    path = tmp_path / "t.jsonl"
    assert read_new(path, 0, tmp_path) == b""  # missing
    _write(path, b"one\ntwo\nthr")
    assert read_new(path, 0, tmp_path) == b"one\ntwo\n"  # the line being written is left
    assert read_new(path, 4, tmp_path) == b"two\n"
    assert read_new(path, 8, tmp_path) == b""
    assert read_new(path, 100, tmp_path) == b""  # shorter than what is stored
    _write(path, b"one\ntwo\nthree\n")
    assert read_new(path, 8, tmp_path) == b"three\n"


def test_restore_writes_a_missing_file_with_its_directories(tmp_path):
    path = tmp_path / "cfg" / "projects" / "-w" / "abc.jsonl"
    assert restore(path, b"one\ntwo\n", tmp_path) is True
    assert path.read_bytes() == b"one\ntwo\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # as the CLI makes it
    assert os.listdir(path.parent) == ["abc.jsonl"]  # no temporary file left


def test_restore_extends_a_shorter_file(tmp_path):
    path = _write(tmp_path / "abc.jsonl", b"one\n")
    assert restore(path, b"one\ntwo\n", tmp_path) is True
    assert path.read_bytes() == b"one\ntwo\n"


def test_restore_keeps_a_file_that_already_begins_with_the_data(tmp_path):
    path = _write(tmp_path / "abc.jsonl", b"one\ntwo\nlocal only\n")
    assert restore(path, b"one\ntwo\n", tmp_path) is False
    assert restore(path, b"one\ntwo\nlocal only\n", tmp_path) is False
    assert path.read_bytes() == b"one\ntwo\nlocal only\n"


@pytest.mark.parametrize("local", [b"one\nTWO\nlonger than stored\n", b"ONE\n", b"one\ntwx\n"])
def test_restore_replaces_a_file_whose_history_went_another_way(tmp_path, local):
    path = _write(tmp_path / "abc.jsonl", local)
    assert restore(path, b"one\ntwo\n", tmp_path) is True
    assert path.read_bytes() == b"one\ntwo\n"


def test_restore_of_nothing_writes_nothing(tmp_path):
    path = tmp_path / "d" / "abc.jsonl"
    assert restore(path, b"", tmp_path) is False
    assert not path.parent.exists()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# with the real CLI


def _turn(
    claude_bin: str, workdir: str, env: dict[str, str], prompt: str, resume: str | None = None
) -> dict[str, Any]:
    """One turn of the CLI as aicli runs it (stream-json, ``--resume``); its result."""
    argv = build_argv(claude_bin, SessionSettings(workdir=workdir), resume)
    line = json.dumps({"type": "user", "message": {"role": "user", "content": prompt}})
    done = subprocess.run(
        argv, cwd=workdir, env=env, input=f"{line}\n", capture_output=True, text=True, timeout=60
    )
    messages = [json.loads(out) for out in done.stdout.splitlines() if out.strip()]
    results = [m for m in messages if m.get("type") == "result"]
    assert results and not results[-1]["is_error"], (done.returncode, done.stderr[-2000:])
    return results[-1]


def _odd_workdir(base: Path) -> Path:
    workdir = base / "w\u00f6rk dir.v2_\U0001f600"
    workdir.mkdir()
    return workdir


def _long_workdir(base: Path) -> Path:
    workdir = base / ("long." * 20) / ("deeper_" * 20)
    workdir.mkdir(parents=True)
    assert len(str(workdir)) > 200  # so the name is cut and hashed
    return workdir


def _linked_workdir(base: Path) -> Path:
    real = base / "real"
    real.mkdir()
    (base / "link").symlink_to(real)
    return base / "link"


@pytest.mark.parametrize("make_workdir", [_odd_workdir, _long_workdir, _linked_workdir])
def test_the_cli_writes_where_transcript_path_says(
    claude_bin, claude_env, tmp_path_factory, make_workdir
):
    workdir = str(make_workdir(tmp_path_factory.mktemp("work")))
    claude_session_id = _turn(claude_bin, workdir, claude_env, "hello")["session_id"]
    path = transcript_path(config_dir(claude_env), workdir, claude_session_id)
    assert path.is_file()
    assert find_transcript(config_dir(claude_env), claude_session_id) == path


def test_a_conversation_moves_to_another_node_through_the_store(
    claude_bin, claude_env, fake_api: FakeAnthropic, tmp_path, workdir
):
    store = open_store(f"sqlite:///{tmp_path / 'aicli.db'}")
    try:
        transcripts = Transcripts(store.engine)
        session_id = store.create_session(workdir=workdir).id

        # node A: the first turn, stored as the task ends
        first = _turn(claude_bin, workdir, claude_env, "remember the word PELICAN")
        claude_session_id = first["session_id"]
        on_a = transcript_path(config_dir(claude_env), workdir, claude_session_id)
        new = read_new(
            on_a,
            transcripts.stored_size(session_id, claude_session_id),
            config_dir(claude_env).parent,
        )
        assert new == on_a.read_bytes()  # whole lines: the turn is over
        transcripts.append(session_id, claude_session_id, 0, new)

        # node B: a config dir (and HOME) of its own, the transcript written back, resumed
        env_b = {
            **claude_env,
            "HOME": str(tmp_path / "home-b"),
            "CLAUDE_CONFIG_DIR": str(tmp_path / "config-b"),
        }
        on_b = transcript_path(config_dir(env_b), workdir, claude_session_id)
        stored = transcripts.load(session_id, claude_session_id)
        assert not on_b.exists() and restore(on_b, stored, tmp_path) is True
        second = _turn(claude_bin, workdir, env_b, "which word?", resume=claude_session_id)

        assert second["session_id"] == claude_session_id  # same id: same file, appended
        asked = fake_api.requests_with_prompt("which word?")[-1]
        assert any("PELICAN" in text for text in asked.user_texts())
        grown = on_b.read_bytes()
        assert grown.startswith(stored) and len(grown) > len(stored)

        # node B stores its turn: the store holds exactly B's file
        offset = transcripts.stored_size(session_id, claude_session_id)
        transcripts.append(session_id, claude_session_id, offset, read_new(on_b, offset, tmp_path))
        assert transcripts.load(session_id, claude_session_id) == grown
    finally:
        store.close()
