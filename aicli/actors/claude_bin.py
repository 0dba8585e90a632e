"""Where the Claude Code CLI is: AICLI_CLAUDE_BIN, then PATH, then the project's .tools."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from aicli.errors import ClaudeNotFound

# The one pin of the CLI version. The Makefile installs it, reading this line with sed:
# keep it one plain string literal.
CLAUDE_CODE_VERSION = "2.1.330"
INSTALL_COMMAND = f"npm install --prefix .tools @anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"
_TOOLS_BIN = Path(".tools") / "node_modules" / ".bin" / "claude"


def find_claude(explicit: str | None = None) -> str:
    """The path of the CLI to run; ``ClaudeNotFound`` names the install command when none is."""
    candidate = explicit or os.environ.get("AICLI_CLAUDE_BIN")
    if candidate:
        resolved = shutil.which(candidate)
        if resolved:
            return resolved
        raise ClaudeNotFound(
            f"The Claude Code CLI '{candidate}' is not an executable file; "
            f"install it with `{INSTALL_COMMAND}` or fix AICLI_CLAUDE_BIN.",
            details={"claude_bin": candidate},
        )
    on_path = shutil.which("claude")
    if on_path:
        return on_path
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        tools = root / _TOOLS_BIN
        if os.access(tools, os.X_OK):
            return str(tools)
    raise ClaudeNotFound(
        "The Claude Code CLI was not found (AICLI_CLAUDE_BIN, PATH, .tools); "
        f"install it with `{INSTALL_COMMAND}` (or `make setup`).",
    )


def claude_version(claude_bin: str, timeout: float = 15.0) -> str:
    """The CLI's own version line, for ``/readyz``; ``ClaudeNotFound`` if it does not run."""
    try:
        done = subprocess.run(
            [claude_bin, "--version"], capture_output=True, text=True, timeout=timeout, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ClaudeNotFound(f"The Claude Code CLI at '{claude_bin}' did not run: {exc}.") from exc
    return done.stdout.strip()
