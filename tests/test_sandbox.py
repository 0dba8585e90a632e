"""The sandbox core: each session's Claude, with the real CLI inside srt, reaches its workdir
and its session's own directory, and nothing of the server, its secrets or other workdirs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from aicli import Runtime
from aicli.actors import sandbox
from aicli.actors.session_dirs import session_dirs
from aicli.contract import TaskStatus
from aicli.errors import SandboxUnavailable
from aicli.testing.processes import marked_running
from aicli.testing.waiting import wait_for
from tests.serve_process import AICLI

SECRET = "the-other-tenants-secret-4711"
FAKE_KEY = "sk-ant-fake-key-for-tests"


@pytest.fixture
def rt(make_runtime) -> Runtime:
    return make_runtime()


def bash(rt: Runtime, session_id: str, command: str) -> str:
    """What the session's Bash printed for ``command`` (the fake replies with it)."""
    task = rt.wait(rt.submit(session_id, f"[[bash: {command}]]").id, timeout=90)
    assert task.status == TaskStatus.COMPLETED, task.error
    return task.output or ""


def test_readiness_says_whether_sessions_are_sandboxed(make_runtime):
    assert make_runtime().readiness()["sandbox"] == "on"


def test_readiness_says_off_when_turned_off(make_runtime):
    assert make_runtime(sandbox="off").readiness()["sandbox"] == "off"


def test_bash_cannot_read_a_file_outside_its_workdir(rt, workdir, tmp_path_factory):
    other = tmp_path_factory.mktemp("other-tenant")
    (other / "secret.txt").write_text(SECRET)
    session = rt.open_session(workdir=workdir, allowed_tools=["Bash"])
    said = bash(rt, session.id, f"cat {other}/secret.txt; ls {other} | wc -l; echo done")
    assert "done" in said
    assert SECRET not in said
    assert "No such file or directory" in said  # hidden, not merely refused


def test_bash_reads_and_writes_its_workdir(rt, workdir):
    Path(workdir, "mine.txt").write_text("readable")
    session = rt.open_session(workdir=workdir, allowed_tools=["Bash"])
    said = bash(rt, session.id, "cat mine.txt; echo made > made.txt; echo done")
    assert "readable" in said
    assert Path(workdir, "made.txt").read_text() == "made\n"


def test_bash_cannot_write_outside_its_workdir(rt, workdir, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    session = rt.open_session(workdir=workdir, allowed_tools=["Bash"])
    said = bash(rt, session.id, f"echo x > {outside}/dropped; echo x > /etc/dropped; echo done")
    assert "done" in said
    assert not (outside / "dropped").exists()
    assert not Path("/etc/dropped").exists()


def test_bash_cannot_see_the_server_or_its_database(rt, workdir, tmp_path):
    session = rt.open_session(workdir=workdir, allowed_tools=["Bash"])
    said = bash(
        rt,
        session.id,
        f"cat /proc/{os.getpid()}/cmdline; ls /proc | grep -c '^[0-9]'; "
        f"ls {tmp_path}; grep -a -l AICLI_API_TOKEN /proc/*/environ; echo done",
    )
    assert "done" in said
    assert "bin/pytest" not in said  # the server's command line
    assert "aicli.db" not in said
    counted = [int(line) for line in said.splitlines() if line.strip().isdigit()]
    assert counted and counted[0] < 40  # its own tree: srt's helpers, the CLI, this shell


def test_the_environment_has_no_secrets_of_the_server(make_runtime, workdir, monkeypatch):
    monkeypatch.setenv("DATABASE_PASSWORD", "hunter2")
    rt = make_runtime(api_token="root-token-never-inside")
    session = rt.open_session(workdir=workdir, allowed_tools=["Bash"])
    said = bash(rt, session.id, "env; echo done")
    names = [line.split("=", 1)[0] for line in said.splitlines() if "=" in line]
    assert [n for n in names if n.startswith("AICLI_")] == []
    assert "DATABASE_PASSWORD" not in names
    assert "root-token-never-inside" not in said
    assert FAKE_KEY not in said  # the CLI holds a capability for aicli's proxy instead
    assert "ANTHROPIC_API_KEY=" in said


def test_unsandboxed_sessions_still_get_the_proxy_and_their_own_config(
    make_runtime, workdir, state_dir
):
    rt = make_runtime(sandbox="off")
    session = rt.open_session(workdir=workdir, allowed_tools=["Bash"])
    said = bash(rt, session.id, "echo $CLAUDE_CONFIG_DIR; echo $HOME; env; echo done")
    dirs = session_dirs(state_dir, session.id)
    assert str(dirs.claude) in said and str(dirs.home) in said
    assert FAKE_KEY not in said


def test_a_loopback_port_of_the_host_is_not_reachable(rt, workdir):
    if not shutil.which("curl"):
        pytest.skip("no curl here")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    reached = threading.Event()

    def accept() -> None:
        try:
            listener.accept()
            reached.set()
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    session = rt.open_session(workdir=workdir, allowed_tools=["Bash"])
    said = bash(rt, session.id, f"curl -sS -m 5 http://127.0.0.1:{port}/; echo done")
    thread.join()
    listener.close()
    assert "done" in said
    assert not reached.is_set()


def test_a_workdir_swapped_for_a_link_fails_the_next_task_saying_so(rt, workdir, tmp_path_factory):
    other = tmp_path_factory.mktemp("other-tenant")
    (other / "secret.txt").write_text(SECRET)
    session = rt.open_session(workdir=workdir, allowed_tools=["Bash"])
    assert "ok" in bash(rt, session.id, "echo ok")  # its process lives on, bound to the old dir
    os.rename(workdir, f"{workdir}-moved")
    os.symlink(other, workdir)
    task = rt.wait(rt.submit(session.id, "[[bash: cat secret.txt]]").id, timeout=60)
    assert task.status == TaskStatus.FAILED
    assert "no longer the directory" in (task.error or "")
    assert str(other) in (task.error or "")
    assert SECRET not in (task.output or "")


def test_each_sessions_transcript_is_in_its_own_config_dir(rt, workdir, state_dir, claude_env):
    first, second = (rt.open_session(workdir=workdir) for _ in range(2))
    for session in (first, second):
        task = rt.wait(rt.submit(session.id, "[[say: hi]]").id, 60)
        assert task.status == TaskStatus.COMPLETED
        claude_id = rt.get_session(session.id).claude_session_id
        mine = session_dirs(state_dir, session.id).claude
        assert [p.name for p in mine.glob("projects/*/*.jsonl")] == [f"{claude_id}.jsonl"]
    assert not list(Path(claude_env["HOME"]).glob(".claude/projects/*/*.jsonl"))


def test_a_closed_sessions_directory_is_removed(rt, workdir, state_dir):
    session = rt.open_session(workdir=workdir)
    assert rt.wait(rt.submit(session.id, "[[say: hi]]").id, 60).status == TaskStatus.COMPLETED
    dirs = session_dirs(state_dir, session.id)
    assert dirs.claude.is_dir() and dirs.policy.is_file()
    rt.close_session(session.id)
    wait_for(lambda: not dirs.root.exists() and not dirs.policy.exists(), 30, "the removal")


def test_cancel_kills_the_sandboxed_tool_tree(rt, workdir):
    session = rt.open_session(workdir=workdir, allowed_tools=["Bash"])
    task = rt.submit(session.id, "[[bash: echo started; sleep 600]]")
    wait_for(lambda: marked_running(rt.owner_prefix, "sleep 600"), 60, "the tool's sleep")
    rt.cancel(task.id)
    assert rt.wait(task.id, timeout=60).status == TaskStatus.CANCELLED
    wait_for(lambda: not marked_running(rt.owner_prefix, "sleep 600"), 30, "the sleep to die")


def test_the_runtime_refuses_to_start_without_srt(make_runtime, monkeypatch):
    monkeypatch.setenv("AICLI_SRT_BIN", "/nonexistent/srt")
    with pytest.raises(SandboxUnavailable, match="--sandbox off"):
        make_runtime()


def test_serve_refuses_to_start_without_srt_and_says_how_to_turn_it_off(tmp_path):
    env = {**os.environ, "AICLI_SRT_BIN": "/nonexistent/srt"}
    done = subprocess.run(
        [AICLI, "serve", "--port", "0", "--database-url", f"sqlite:///{tmp_path}/a.db"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "/nonexistent/srt" in done.stderr
    assert "make setup" in done.stderr
    assert "--sandbox off" in done.stderr and "AICLI_SANDBOX=off" in done.stderr


def test_serve_with_the_sandbox_off_needs_no_srt(tmp_path, make_runtime, monkeypatch):
    monkeypatch.setenv("AICLI_SRT_BIN", "/nonexistent/srt")
    assert make_runtime(sandbox="off").readiness()["sandbox"] == "off"


def test_an_unknown_sandbox_mode_is_refused(make_runtime):
    with pytest.raises(Exception, match="on or off"):
        make_runtime(sandbox="maybe")


def test_missing_bubblewrap_is_named(monkeypatch, claude_bin):
    from aicli.actors import sandbox as sandbox_module

    real_which = shutil.which
    monkeypatch.setattr(
        sandbox_module.shutil, "which", lambda name: None if name == "bwrap" else real_which(name)
    )
    srt = sandbox_module.find_srt()
    with pytest.raises(SandboxUnavailable, match="bubblewrap") as raised:
        sandbox_module.Sandbox(srt, claude_bin).check()
    assert "apt-get install bubblewrap socat ripgrep" in raised.value.message


def test_a_sandboxed_environment_is_an_allowlist(tmp_path):
    from aicli.actors.claude_env import session_environment

    server = {
        "PATH": "/usr/bin",
        "LC_ALL": "C.UTF-8",
        "CLAUDE_CODE_EFFORT_LEVEL": "low",
        "ANTHROPIC_MODEL": "m",
        "DATABASE_URL": "postgresql://secret",
        "ANTHROPIC_API_KEY": "operator-key",
        "ANTHROPIC_AUTH_TOKEN": "operator-token",
        "TMPDIR": "/var/tmp",
    }
    given = {"DISABLE_AUTOUPDATER": "1", "ANTHROPIC_BASE_URL": "http://upstream", "X": "y"}
    dirs = session_dirs(str(tmp_path), "s1")
    env = session_environment(server, given, dirs, "http://127.0.0.1:1", "tok", sandboxed=True)
    assert env == {
        "PATH": "/usr/bin",
        "LC_ALL": "C.UTF-8",
        "CLAUDE_CODE_EFFORT_LEVEL": "low",
        "ANTHROPIC_MODEL": "m",
        "DISABLE_AUTOUPDATER": "1",
        "X": "y",
        "HOME": str(dirs.home),
        "CLAUDE_CONFIG_DIR": str(dirs.claude),
        "CLAUDE_CODE_TMPDIR": str(dirs.tmp),
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:1",
        "ANTHROPIC_API_KEY": "tok",
    }
    unsandboxed = session_environment(
        server, given, dirs, "http://127.0.0.1:1", "tok", sandboxed=False
    )
    assert unsandboxed["DATABASE_URL"] == "postgresql://secret"  # as before the sandbox
    assert "ANTHROPIC_AUTH_TOKEN" not in unsandboxed
    assert unsandboxed["ANTHROPIC_API_KEY"] == "tok" and unsandboxed["TMPDIR"] == str(dirs.tmp)


def test_a_principals_own_key_reaches_the_api_and_never_the_sandbox(
    make_runtime, workdir, fake_api
):
    from aicli.contract import CredentialsSet, PrincipalCreate

    rt = make_runtime(api_token="root-token")
    made = rt.create_principal(PrincipalCreate(name="alice"))
    alice = rt.principal_for(made.token)
    rt.set_credentials(
        made.id, CredentialsSet(anthropic_api_key="sk-ant-alices-own-key"), principal=alice
    )
    session = rt.open_session(workdir=workdir, allowed_tools=["Bash"], principal=alice)
    said = bash(rt, session.id, "env; echo done")
    assert "sk-ant-alices-own-key" not in said
    assert fake_api.requests[-1].headers["x-api-key"] == "sk-ant-alices-own-key"


def _srt_failing_first(monkeypatch: pytest.MonkeyPatch, failures: int) -> list[int]:
    """srt's first ``failures`` runs fail as srt does when its own 1 s `which` overruns on a
    loaded machine; the runs so far are counted in the list returned."""
    runs: list[int] = []
    real = subprocess.run

    def run(args, *rest, **options):
        if "--settings" not in args:  # not srt
            return real(args, *rest, **options)
        runs.append(1)
        if len(runs) <= failures:
            return subprocess.CompletedProcess(args, 1, "", "Error: ripgrep (rg) not found\n")
        return real(args, *rest, **options)

    monkeypatch.setattr(sandbox.subprocess, "run", run)
    return runs


def test_a_probe_that_fails_under_load_is_asked_again(make_runtime, monkeypatch):
    runs = _srt_failing_first(monkeypatch, failures=2)
    assert make_runtime().readiness()["sandbox"] == "on"
    assert len(runs) == 3


def test_a_probe_that_keeps_failing_refuses_with_what_srt_said(make_runtime, monkeypatch):
    _srt_failing_first(monkeypatch, failures=99)
    with pytest.raises(SandboxUnavailable, match=r"ripgrep \(rg\) not found"):
        make_runtime()


def test_a_session_ending_leaves_the_write_denials_of_another_in_the_same_workdir(rt, workdir):
    # srt blocks writes to absent dotfiles (.gitconfig, .bashrc, ...) by binding over an
    # empty file that bubblewrap makes, and the srt that made it removes it when its process
    # ends, which undoes that bind in every other sandbox on the same workdir.
    first = rt.open_session(workdir=workdir, allowed_tools=["Bash"])
    assert "one" in bash(rt, first.id, "echo one")
    second = rt.open_session(workdir=workdir, allowed_tools=["Bash"])
    assert "two" in bash(rt, second.id, "echo two")
    both = len(marked_running(rt.owner_prefix, "sandbox-runtime"))
    rt.close_session(first.id)
    wait_for(
        lambda: len(marked_running(rt.owner_prefix, "sandbox-runtime")) < both,
        30,
        "the first session's sandbox to end",
    )
    said = bash(rt, second.id, "echo planted > .gitconfig; echo rc=$?; cat .gitconfig")
    assert "rc=0" not in said and "planted" not in said, said
    assert not Path(workdir, ".gitconfig").exists() or Path(workdir, ".gitconfig").read_text() == ""
