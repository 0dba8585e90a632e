"""aicli: run tasks inside Claude Code sessions over HTTP."""
