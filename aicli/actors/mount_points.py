"""The empty dotfiles srt denies writes to, made by aicli before srt runs, and kept.

srt stops a sandbox from creating a dangerous file that is absent (``.gitconfig``,
``.bashrc``, ``.mcp.json``, ``.vscode/`` ...: code that runs outside later) by binding an
empty file or directory over it, which bubblewrap creates in the workdir. The srt that
created one removes it when its process ends, and that undoes the bind in every other
sandbox on the same workdir: its deny is gone, and a sandbox starting in that moment
fails ("bwrap: Can't find source path"). Sessions share workdirs, so aicli makes these
paths itself: srt then finds them present, binds them read-only as they are, and never
removes them. The lists mirror srt's ``DANGEROUS_FILES`` and ``getDangerousDirectories``
(``dist/sandbox/sandbox-utils.js``) for the pinned version.
"""

from __future__ import annotations

import contextlib
import os

DENIED_FILES = (
    ".gitconfig",
    ".gitmodules",
    ".bashrc",
    ".bash_profile",
    ".zshrc",
    ".zprofile",
    ".profile",
    ".ripgreprc",
    ".mcp.json",
)
DENIED_DIRECTORIES = (".vscode", ".idea", ".claude/commands", ".claude/agents")


def hold_mount_points(workdir: str) -> None:
    """Make each absent path empty; never through a link a tenant left (``O_NOFOLLOW``,
    ``O_EXCL``: whatever is there already, file, link or directory, stays as it is)."""
    root = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for name in DENIED_FILES:
            with contextlib.suppress(FileExistsError):
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                os.close(os.open(name, flags, 0o644, dir_fd=root))
        for path in DENIED_DIRECTORIES:
            _make_directories(root, path.split("/"))
    finally:
        os.close(root)


def _make_directories(root: int, parts: list[str]) -> None:
    """mkdir -p below ``root``, one component at a time, following no link."""
    fd = os.dup(root)
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError:  # a file or a link is there: srt handles what it finds
                return
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
