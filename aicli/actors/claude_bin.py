"""Where the Claude Code CLI is: AICLI_CLAUDE_BIN, then PATH, then the project's .tools."""

from __future__ import annotations

import os
import subprocess

from aicli.actors.executables import find_executable
from aicli.errors import ClaudeNotFound

# The one pin of the CLI version. The Makefile installs it, reading this line with sed:
# keep it one plain string literal.
CLAUDE_CODE_VERSION = "2.1.330"
INSTALL_COMMAND = f"npm install --prefix .tools @anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"


def find_claude(explicit: str | None = None) -> str:
    """The path of the CLI to run; ``ClaudeNotFound`` names the install command when none is."""
    candidate = explicit or os.environ.get("AICLI_CLAUDE_BIN")
    found = find_executable("claude", candidate)
    if found:
        return found
    if candidate:
        raise ClaudeNotFound(
            f"The Claude Code CLI '{candidate}' is not an executable file; "
            f"install it with `{INSTALL_COMMAND}` or fix AICLI_CLAUDE_BIN.",
            details={"claude_bin": candidate},
        )
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
