"""The key that seals principals' own credentials, kept apart from the database it protects.

A reader of the database (a backup, a stolen file, a tenant's ``sqlite3``) must not get
a working Anthropic key out of it, so the key lives elsewhere: ``secret_key``
(``AICLI_SECRET_KEY``) or the first line of ``secret_key_file``. With neither, one SQLite
server makes its own, ``aicli-secret.key`` (mode 0600) next to its database file, on the
first credential stored. Nodes sharing a PostgreSQL database must share the key too; a
key that each made for itself would open only what it sealed, so there none is made and
storing credentials is refused until the operator sets one.

The key is read when first needed, not at start: a server without credentials to keep
works without it, and a refusal names what to set.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import threading
from pathlib import Path

from aicli.errors import CredentialsUnavailable
from aicli.storage import database

KEY_BYTES = 32  # AES-256
DEFAULT_FILE_NAME = "aicli-secret.key"
_HOW_TO_MAKE = (
    "32 random bytes in URL-safe base64, as "
    "`python -c 'import base64,os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'` "
    "prints"
)


def _decoded(text: str, where: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise CredentialsUnavailable(
            f"The secret key in {where} is not a key of aicli's: it must be {_HOW_TO_MAKE}.",
            {"setting": "secret_key"},
        )
    return key


def _encoded(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode("ascii")


class SecretKey:
    """The key, found (or, for one SQLite server, made) on first use and then kept."""

    def __init__(
        self, database_url: str, *, key: str | None = None, key_file: str | None = None
    ) -> None:
        self._given = key
        self._file = key_file
        self._default_file: Path | None = None
        kind, params = database.parse(database_url)
        if kind == database.SQLITE:
            self._default_file = Path(params["database"]).parent / DEFAULT_FILE_NAME
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def get(self, *, create: bool) -> bytes:
        """The key; ``create``: make the default file if it is the one and is missing (to
        seal; to open, a missing file is an error: what it sealed is lost with it)."""
        with self._lock:
            if self._key is None:
                self._key = self._find(create)
            return self._key

    def _find(self, create: bool) -> bytes:
        if self._given is not None:
            return _decoded(self._given, "AICLI_SECRET_KEY")
        if self._file is not None:
            return _read(Path(self._file), "AICLI_SECRET_KEY_FILE")
        if self._default_file is None:
            raise CredentialsUnavailable(
                "This service keeps its data in PostgreSQL, which several nodes may share, and "
                "no secret key is configured, so it cannot store credentials of principals: "
                "the operator must set AICLI_SECRET_KEY_FILE (or AICLI_SECRET_KEY) to the same "
                f"key on every node ({_HOW_TO_MAKE}).",
                {"setting": "secret_key_file"},
            )
        if create and not self._default_file.exists():
            try:
                _make(self._default_file)
            except OSError as exc:
                raise CredentialsUnavailable(
                    f"The secret key file {str(self._default_file)!r} cannot be made: "
                    f"{exc.strerror or type(exc).__name__}; make it, or set "
                    "AICLI_SECRET_KEY_FILE.",
                    {"setting": "secret_key_file"},
                ) from None
        return _read(self._default_file, "the default key file")


def _read(path: Path, setting: str) -> bytes:
    try:
        lines = path.read_text(encoding="ascii").strip().splitlines()
    except FileNotFoundError:
        raise CredentialsUnavailable(
            f"The secret key file {str(path)!r} ({setting}) does not exist; credentials "
            "stored with it cannot be opened without it: restore it, or have them set again.",
            {"setting": "secret_key_file"},
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsUnavailable(
            f"The secret key file {str(path)!r} ({setting}) cannot be read: "
            f"{getattr(exc, 'strerror', None) or type(exc).__name__}.",
            {"setting": "secret_key_file"},
        ) from None
    return _decoded(lines[0] if lines else "", f"{str(path)!r}")


def _make(path: Path) -> None:
    """A new random key at ``path``, mode 0600, whole or not at all: it is written to a
    private file that is then linked into place, which fails if a key got there first."""
    spare = path.with_name(f".{path.name}.{os.urandom(8).hex()}")
    fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(_encoded(os.urandom(KEY_BYTES)) + "\n")
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # made meanwhile: that one it is
            os.link(spare, path)
    finally:
        spare.unlink(missing_ok=True)
