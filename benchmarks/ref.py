"""``--ref``: the server side of the same rows from another checkout of aicli.

``--ref`` names a git revision of this repository, or a directory holding a
checkout (a ``git worktree`` of an old commit, say), given a ``.venv`` of its
own if it has none. A revision is exported (``git archive``: the repository's
worktree list is left alone) to ``~/.cache/aicli-bench/<commit>`` with a
virtualenv of its own (``pip install -e .``), made once and reused. Only its ``aicli serve``
is used: the client, the SDK, the fake API, the Claude CLI (``AICLI_CLAUDE_BIN``)
and the bare anchors are this checkout's, so that only the server differs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "aicli-bench"


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"--ref: git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def _executable(checkout: Path) -> Path:
    return checkout / ".venv" / "bin" / "aicli"


def _install(checkout: Path) -> None:
    venv = checkout / ".venv"
    print(f"--ref: a virtualenv for {checkout} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", str(checkout)], check=True)


def prepare(ref: str) -> tuple[str, str]:
    """(the ref's ``aicli`` executable, a label: the commit and its subject)."""
    given = Path(ref)
    if given.is_dir():
        checkout = given.resolve()
        if not _executable(checkout).exists():
            _install(checkout)
        label = subprocess.run(
            ["git", "-C", str(checkout), "log", "-1", "--format=%h %<(50,trunc)%s"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return str(_executable(checkout)), label or str(checkout)
    commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    checkout = CACHE / commit
    if not (checkout / "setup.cfg").exists():
        checkout.mkdir(parents=True, exist_ok=True)
        archive = subprocess.Popen(
            ["git", "-C", str(ROOT), "archive", commit], stdout=subprocess.PIPE
        )
        subprocess.run(["tar", "-x", "-C", str(checkout)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise SystemExit(f"--ref: git archive {commit} failed")
    if not _executable(checkout).exists():
        _install(checkout)
    return str(_executable(checkout)), _git("log", "-1", "--format=%h %<(50,trunc)%s", commit)
