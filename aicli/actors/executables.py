"""Where an npm-installed tool is: the path asked for, else on PATH, else the project's .tools.

The Claude Code CLI and the sandbox runtime are found the same way; each caller
says in its own words what is missing and how to install it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

_TOOLS_BIN = Path(".tools") / "node_modules" / ".bin"


def find_executable(name: str, chosen: str | None) -> str | None:
    """``chosen`` resolved (None if it is no executable), or without one ``name`` on PATH or
    in .tools under the working directory or the checkout; None when none is there."""
    if chosen:
        return shutil.which(chosen)
    on_path = shutil.which(name)
    if on_path:
        return on_path
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        tools = root / _TOOLS_BIN / name
        if os.access(tools, os.X_OK):
            return str(tools)
    return None
