"""Whether a workdir lies inside the workspace root, judged by real paths.

Checked when a session is opened and again each time a Claude process starts
for it: a symlink or a renamed directory can move a workdir outside the root
after the first check.
"""

from __future__ import annotations

import os


def outside_root(workdir: str, root: str) -> bool:
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(workdir)]) != real_root
