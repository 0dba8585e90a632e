"""Transcripts: the Claude CLI's conversation file of each session, kept in the database.

A session may move to another node, and ``--resume`` there needs the CLI's
transcript (a JSONL file the CLI only ever appends to). So each task's end
stores the bytes the file gained since, as one chunk at the offset where they
start; a node that takes the session over concatenates the chunks and writes
the file back before it starts the CLI. Reached as ``Store.transcripts``.

The chunks of a transcript tile it exactly, with neither gap nor overlap:
an append must start where the stored bytes end, and the UNIQUE index on
(session, CLI session, offset) lets two nodes that race for the same offset
store one chunk, never both. A retried append (its first answer lost) finds
its own chunk and changes nothing. The size is read from the last chunk
alone: a transcript grows to megabytes, and ``LENGTH`` of a blob reads no
content on either backend.
"""

from __future__ import annotations

from peewee import IntegrityError

from aicli.errors import NotOwner, SessionNotFound, StorageError
from aicli.storage.engine import Engine

# OFFSET is a keyword in SQLite and PostgreSQL alike: always quoted.
_WHERE = "WHERE session_id = ? AND claude_session_id = ?"
_LAST = (
    f'SELECT "offset", LENGTH(data) FROM transcript_chunks {_WHERE} ORDER BY "offset" DESC LIMIT 1'
)
_INSERT = (
    'INSERT INTO transcript_chunks (session_id, claude_session_id, "offset", data)'
    " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id"
)
_REPEAT = f'SELECT 1 FROM transcript_chunks {_WHERE} AND "offset" = ? AND data = ?'
_EPOCH = "SELECT owner_epoch FROM sessions WHERE id = ?"
_ALL = f'SELECT "offset", data FROM transcript_chunks {_WHERE} ORDER BY "offset"'


class Transcripts:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._execute = engine.execute

    def stored_size(self, session_id: str, claude_session_id: str) -> int:
        """Where the next append must start: the bytes after it are what the file gained."""
        return self._engine.read(lambda: self._size(session_id, claude_session_id))

    def append(
        self,
        session_id: str,
        claude_session_id: str,
        offset: int,
        data: bytes,
        *,
        epoch: int | None = None,
    ) -> int:
        """Store ``data`` as the bytes from ``offset`` on; the stored size after it.

        Repeating an append that was stored changes nothing, so a caller whose answer was
        lost may simply retry. Any other start than the stored size would leave a gap or
        splice two histories: ``StorageError``, and the caller should start over from
        ``stored_size``. ``SessionNotFound`` if the session's row is gone. With ``epoch``
        (the caller's claim on the session), ``NotOwner`` unless that claim still holds it:
        a node that lost the session must not add its turn to the history."""
        if not data:
            return self.stored_size(session_id, claude_session_id)
        key = (session_id, claude_session_id)

        def write() -> int:
            if epoch is not None:
                held = self._execute(_EPOCH, (session_id,)).fetchone()
                if held is not None and held[0] != epoch:
                    raise NotOwner(
                        f"The claim {epoch} on session {session_id} has been taken over by a"
                        " later one.",
                        {"session_id": session_id},
                    )
            size = self._size(*key)
            if offset == size and self._execute(_INSERT, (*key, offset, data)).fetchone():
                return size + len(data)
            # A retry of a stored chunk, or a peer stored one at this offset first (the
            # insert did nothing): harmless if it holds these very bytes.
            if self._execute(_REPEAT, (*key, offset, data)).fetchone() is not None:
                return self._size(*key)
            size = self._size(*key)  # a peer's chunk may have moved it since
            raise StorageError(
                f"The transcript '{claude_session_id}' of session '{session_id}' holds"
                f" {size} bytes: a chunk of {len(data)} bytes at offset {offset} would"
                f" {'leave a gap' if offset > size else 'overwrite stored bytes'}.",
                {"session_id": session_id, "offset": offset, "stored_size": size},
            )

        try:
            return self._engine.write(write)
        except IntegrityError as exc:  # the only constraint left: the session's foreign key
            raise SessionNotFound(session_id) from exc

    def load(self, session_id: str, claude_session_id: str) -> bytes:
        """The whole transcript, checked to be contiguous: a CLI handed a spliced file
        would resume a conversation that never happened."""
        rows = self._engine.read(
            lambda: self._execute(_ALL, (session_id, claude_session_id)).fetchall()
        )
        size = 0
        for offset, data in rows:
            if offset != size:
                raise StorageError(
                    f"The transcript '{claude_session_id}' of session '{session_id}' has"
                    f" a chunk at offset {offset} where {size} was expected.",
                    {"session_id": session_id, "offset": offset, "expected": size},
                )
            size += len(data)
        return b"".join(data for _, data in rows)

    def _size(self, session_id: str, claude_session_id: str) -> int:
        row = self._execute(_LAST, (session_id, claude_session_id)).fetchone()
        return 0 if row is None else row[0] + row[1]
