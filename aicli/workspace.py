"""Whether a workdir lies inside the workspace root, judged by real paths.

Checked when a session is opened and again each time a Claude process starts
for it: a symlink or a renamed directory can move a workdir outside the root
after the first check.
"""

from __future__ import annotations

import os

from aicli.errors import InvalidRequest


def outside_root(workdir: str, root: str) -> bool:
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(workdir)]) != real_root


def confined(value: str, workspace_root: str | None, field: str = "workdir") -> str:
    """The directory as its real path: inside the workspace root, and an existing directory.

    Symlinks and ``..`` are resolved first, and confinement is checked before
    existence, so that clients cannot probe which paths exist outside the root.
    """
    path = os.path.realpath(value)
    if workspace_root is not None and outside_root(path, workspace_root):
        root = os.path.realpath(workspace_root)
        raise InvalidRequest(
            f"'{field}' {value!r} lies outside the workspace root {root!r}.", {"field": field}
        )
    if not os.path.isdir(path):
        raise InvalidRequest(f"'{field}' {value!r} is not an existing directory.", {"field": field})
    return path
