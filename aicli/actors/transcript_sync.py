"""A session's CLI transcript follows the session from node to node, through the database.

``--resume`` needs the transcript on the disk of the node that starts the CLI,
and the CLI only ever appends to it. So after each turn the new whole lines go
to the database, and before a CLI resumes the session on a node whose copy is
missing or differs in size, the stored bytes are written back. Only where
several nodes can share the database (PostgreSQL): one SQLite server keeps the
transcript where the CLI wrote it. A failure here costs the conversation's
memory on another node at worst, never the task: it is logged, not raised.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from aicli.actors import transcript_files as files
from aicli.errors import NotOwner, StorageError, Unavailable
from aicli.storage import Store

log = logging.getLogger(__name__)


class TranscriptSync:
    def __init__(self, store: Store, session_id: str, env: Mapping[str, str]) -> None:
        self.store = store
        self.session_id = session_id
        self.env = env
        self.config_dir = files.config_dir(env)
        # The session's own directory, which holds the config directory: the sandbox binds it
        # writable but cannot replace it, so transcripts are reached from there, link-free.
        self.beneath = self.config_dir.parent
        self.stored: dict[str, int] = {}  # claude session id -> bytes the database holds

    def before_resume(self, workdir: str, claude_session_id: str) -> bool:
        """Make the local transcript the stored one, unless it is already as long; whether
        there is one to resume (without, the CLI would refuse to start the turn at all)."""
        try:
            stored = self.store.transcripts.stored_size(self.session_id, claude_session_id)
            self.stored[claude_session_id] = stored
            path = self._path(workdir, claude_session_id)
            local = _size(path)
            if stored == 0 or local == stored:
                return local > 0
            data = self.store.transcripts.load(self.session_id, claude_session_id)
            if files.restore(path, data, self.beneath):
                log.info("session %s: restored its transcript (%d bytes)", self.session_id, stored)
            return True
        except (OSError, ValueError, StorageError, Unavailable) as exc:  # ValueError: a bad id
            log.warning("session %s: could not restore its transcript: %s", self.session_id, exc)
            return False

    def after_turn(self, workdir: str, claude_session_id: str, epoch: int | None) -> None:
        """Store the lines the turn added, while the claim ``epoch`` holds the session."""
        try:
            offset = self.stored.get(claude_session_id)
            if offset is None:
                offset = self.store.transcripts.stored_size(self.session_id, claude_session_id)
            data = files.read_new(self._path(workdir, claude_session_id), offset, self.beneath)
            if data:
                offset = self.store.transcripts.append(
                    self.session_id, claude_session_id, offset, data, epoch=epoch
                )
            self.stored[claude_session_id] = offset
        except (OSError, ValueError, NotOwner, StorageError, Unavailable) as exc:
            self.stored.pop(claude_session_id, None)  # read the stored size again next time
            log.warning("session %s: could not store its transcript: %s", self.session_id, exc)

    def _path(self, workdir: str, claude_session_id: str) -> Path:
        expected = files.transcript_path(self.config_dir, workdir, claude_session_id, self.env)
        if expected.exists():
            return expected
        return files.find_transcript(self.config_dir, claude_session_id) or expected


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
