"""A session's own directories on this node: its Claude config, HOME and temp files.

Each session's CLI gets ``<state_dir>/sessions/<session id>/`` with ``claude/``
(its ``CLAUDE_CONFIG_DIR``: transcripts, settings, todos), ``home/`` and
``tmp/``, so one tenant's transcripts are never where another's CLI looks, and
the sandbox binds exactly this directory writable. srt's policy for the session
lies in ``<state_dir>/policies/``, outside it: what the sandbox can write must
never decide what the sandbox may do the next time.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SessionDirs:
    root: Path
    policy: Path

    @property
    def claude(self) -> Path:
        return self.root / "claude"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def create(self) -> None:
        for path in (self.claude, self.home, self.tmp):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def remove(self) -> None:
        """Gone with the session; a directory already gone is no error."""
        shutil.rmtree(self.root, ignore_errors=True)
        self.policy.unlink(missing_ok=True)


def session_dirs(state_dir: str, session_id: str) -> SessionDirs:
    base = Path(os.path.abspath(state_dir))
    return SessionDirs(base / "sessions" / session_id, base / "policies" / f"{session_id}.json")

