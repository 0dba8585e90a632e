"""Where the Claude CLI keeps a session's transcript on this machine, and moving its bytes.

The CLI (2.1.330, measured) writes ``<config dir>/projects/<project>/<id>.jsonl``
and only ever appends to it, a line per record: across a ``--resume`` and even
a kill mid-turn the bytes already there stay as they were. So what a turn
added is the bytes after the stored size, and a file holding the stored bytes
is all another machine needs to resume. ``<project>`` is the CLI's own rule,
reproduced here (its minified ``w``, ``KN`` and ``nO`` in 2.1.330): the physical cwd with every
UTF-16 code unit outside ``[A-Za-z0-9]`` made ``-``; past 200 characters, the
first 200 and ``-`` and a hash of the whole path. With ``CLAUDE_CONFIG_DIR`` set,
a valid ``CLAUDE_CODE_PROJECT_DIR_NAME`` replaces it.

On ``--resume`` the CLI looks for ``<id>.jsonl`` in every project directory, not
only its cwd's, and appends where it found it; without one it fails with "No
conversation found with session ID". These are pure functions over the local disk.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import pwd
import re
import secrets
import unicodedata
from collections.abc import Mapping
from pathlib import Path

MAX_PROJECT_NAME = 200  # the CLI's ``_oe``
_NAME_OVERRIDE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_WINDOWS_DEVICE = re.compile(r"con|prn|aux|nul|com[0-9]|lpt[0-9]", re.IGNORECASE)
_DIGITS36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY


def config_dir(env: Mapping[str, str]) -> Path:
    """The CLI's config directory under ``env``, the environment it runs with.

    Relative (even empty) ``CLAUDE_CONFIG_DIR`` is the CLI's cwd's: ``transcript_path``
    resolves it against the workdir. An empty ``HOME`` counts as unset, as for the CLI."""
    configured = env.get("CLAUDE_CONFIG_DIR")
    if configured is not None:  # the CLI tests it with ``??``: "" is set
        return Path(unicodedata.normalize("NFC", configured))
    home = env.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
    return Path(unicodedata.normalize("NFC", home)) / ".claude"


def project_dir_name(workdir: str, env: Mapping[str, str] | None = None) -> str:
    """The directory under ``projects/`` the CLI gives a session started in ``workdir``."""
    env = env or {}
    override = env.get("CLAUDE_CODE_PROJECT_DIR_NAME", "")
    if env.get("CLAUDE_CONFIG_DIR") and _valid_override(override):
        return override
    cwd = os.path.realpath(workdir)  # the CLI sees getcwd(): symlinks resolved, $PWD ignored
    name = "".join(c if c.isascii() and c.isalnum() else "-" * _utf16_units(c) for c in cwd)
    if len(name) <= MAX_PROJECT_NAME:
        return name
    return f"{name[:MAX_PROJECT_NAME]}-{_base36(abs(_java_hash(cwd)))}"


def transcript_path(
    config_dir: Path,
    workdir: str,
    claude_session_id: str,
    env: Mapping[str, str] | None = None,
) -> Path:
    """Where the CLI started in ``workdir`` writes the transcript, and so where to restore it.

    ``env``: the CLI's, for a ``CLAUDE_CODE_PROJECT_DIR_NAME`` override; without it the
    name comes from the workdir alone."""
    base = Path(os.path.realpath(workdir), config_dir)  # an absolute config_dir wins
    project = project_dir_name(workdir, env)
    return base / "projects" / project / _file_name(claude_session_id)


def find_transcript(config_dir: Path, claude_session_id: str) -> Path | None:
    """The transcript wherever the CLI put it, when ``transcript_path`` misses: it may
    have been resumed from another project's directory (and then appends there).

    Of several, the latest written: it holds the latest turn."""
    name = _file_name(claude_session_id)
    found = [p for p in (config_dir / "projects").glob(f"*/{glob.escape(name)}") if p.is_file()]
    return max(found, key=_mtime, default=None)


def read_new(path: Path, offset: int, beneath: Path) -> bytes:
    """The whole lines after ``offset``: a line still being written is left for next time,
    so a stored transcript never ends in half a record. ``path`` is reached from
    ``beneath`` without following a link (``_directory``)."""
    try:
        directory = _directory(beneath, path.parent, create=False)
    except FileNotFoundError:
        return b""
    try:
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=directory)
    except FileNotFoundError:
        return b""
    finally:
        os.close(directory)
    with os.fdopen(fd, "rb") as file:
        file.seek(offset)
        data = file.read()
    return data[: data.rfind(b"\n") + 1]


def restore(path: Path, data: bytes, beneath: Path) -> bool:
    """Make ``path`` hold ``data`` unless it already begins with it; whether it wrote.

    A longer local file that begins with ``data`` holds turns not stored yet: kept. Any
    other file (shorter, or a history that went another way, or a link) yields to the
    stored one, which every node agreed on. Written whole or not at all, so a crash never
    leaves a CLI half a transcript. Nothing to restore from empty ``data``. ``path`` is
    reached from ``beneath`` without following a link (``_directory``)."""
    if not data:
        return False
    directory = _directory(beneath, path.parent, create=True)
    try:
        if _begins_with(directory, path.name, data):
            return False
        _replace_atomically(directory, path.name, data)
    finally:
        os.close(directory)
    return True


def _directory(beneath: Path, directory: Path, *, create: bool) -> int:
    """A descriptor of ``directory``, opened one name at a time from ``beneath`` without
    following a link on the way (``ValueError`` if it is not under ``beneath``).

    A sandboxed CLI writes its config directory, and aicli reads and writes the
    transcripts in it outside the sandbox: a link the tenant left there (the transcript,
    its project directory, the config directory itself) must not lead aicli to another
    session's transcript, the state directory or anywhere else, even if it is swapped in
    while aicli is on its way."""
    fd = os.open(beneath, _DIRECTORY)
    try:
        for name in directory.relative_to(beneath).parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=fd)
            child = os.open(name, _DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _replace_atomically(directory: int, name: str, data: bytes) -> None:
    temporary = f".{name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    fd = os.open(temporary, flags, 0o600, dir_fd=directory)  # 0o600, as the CLI's own file
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=directory)
        raise
    os.fsync(directory)  # the rename itself survives a power loss


def _begins_with(directory: int, name: str, data: bytes) -> bool:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=directory)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link: replaced, never followed
            return False
        raise
    with os.fdopen(fd, "rb") as file:
        return file.read(len(data)) == data


def _file_name(claude_session_id: str) -> str:
    """``<id>.jsonl``, refusing an id that would name a file elsewhere (it came from a
    process's output, and ``restore`` writes there)."""
    if claude_session_id in ("", ".", "..") or any(c in claude_session_id for c in "/\0"):
        raise ValueError(f"Not a Claude session id: {claude_session_id!r}.")
    return f"{claude_session_id}.jsonl"


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("-inf")


def _valid_override(name: str) -> bool:
    return bool(_NAME_OVERRIDE.fullmatch(name)) and not _WINDOWS_DEVICE.fullmatch(name)


def _utf16_units(char: str) -> int:
    return 2 if ord(char) > 0xFFFF else 1


def _java_hash(text: str) -> int:
    """The CLI's ``rse``: ``h = 31 * h + unit`` over UTF-16 code units, in 32-bit signed."""
    value = 0
    units = text.encode("utf-16-le", "surrogatepass")
    for i in range(0, len(units), 2):
        value = (value * 31 + int.from_bytes(units[i : i + 2], "little")) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = _DIGITS36[digit] + digits
        if not number:
            return digits
