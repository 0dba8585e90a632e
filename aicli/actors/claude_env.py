"""The environment a session's CLI starts with.

Sandboxed, it is an allowlist: locale, PATH, the CLI's own switches and model
choices, and what the embedder passed as ``claude_env``, never the rest of the
server's environment (a database URL, a cloud key, ``AICLI_*``). Unsandboxed,
it stays the server's environment minus what ``child_environment`` drops. Either
way the Anthropic credentials never reach the CLI: it gets the URL of aicli's
credential proxy and a capability token for this process instead, and a
config directory, HOME and temp directory of its session's own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from aicli.actors import process_tree
from aicli.actors.session_dirs import SessionDirs

_ALLOWED_NAMES = frozenset(
    {"PATH", "LANG", "LANGUAGE", "TZ", "TERM", "ANTHROPIC_MODEL", "ANTHROPIC_SMALL_FAST_MODEL"}
)
_ALLOWED_PREFIXES = ("LC_", "CLAUDE_CODE_", "DISABLE_", "ANTHROPIC_DEFAULT_")
# The CLI's own switches include credentials (CLAUDE_CODE_OAUTH_TOKEN, ..._REFRESH_TOKEN,
# ..._GATEWAY_TOKEN, ..._CLIENT_KEY_PASSPHRASE, measured in 2.1.330): a name like these
# is no switch and stays outside, whatever its prefix. "..._TOKENS" (a count) is kept.
_SECRET_NAME = re.compile(r"(TOKEN|KEY|SECRET|PASSWORD|PASSPHRASE)$|OAUTH")
CREDENTIALS = frozenset({"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"})
# Variables that must not reach Claude or the tools it runs: our own settings
# (which include the API token) and the marker the CLI sets for nested runs.
_DROPPED_PREFIXES = ("AICLI_",)
_DROPPED_NAMES = frozenset({"CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT"})


def allowed(name: str) -> bool:
    return (name in _ALLOWED_NAMES or name.startswith(_ALLOWED_PREFIXES)) and not (
        _SECRET_NAME.search(name)
    )


def session_environment(
    server_env: Mapping[str, str],
    claude_env: Mapping[str, str],
    dirs: SessionDirs,
    api_url: str,
    api_token: str,
    *,
    sandboxed: bool,
) -> dict[str, str]:
    """The CLI's environment before ``child_environment`` drops ``AICLI_*`` and adds the mark."""
    kept = {k: v for k, v in server_env.items() if allowed(k)} if sandboxed else dict(server_env)
    env = {**kept, **claude_env}
    for name in CREDENTIALS:
        env.pop(name, None)
    env.update(
        HOME=str(dirs.home),
        CLAUDE_CONFIG_DIR=str(dirs.claude),
        CLAUDE_CODE_TMPDIR=str(dirs.tmp),
        ANTHROPIC_BASE_URL=api_url,
        ANTHROPIC_API_KEY=api_token,
    )
    if sandboxed:
        # srt makes its proxy's unix sockets under TMPDIR, and a deep session directory
        # would pass the 108 bytes a socket's path may have: the launcher sets it inside.
        env.pop("TMPDIR", None)
    else:
        env["TMPDIR"] = str(dirs.tmp)
    return env


def child_environment(
    base: Mapping[str, str], extra: Mapping[str, str], mark: str
) -> dict[str, str]:
    """The process's own environment: ``base`` less what must not reach the CLI, then
    ``extra``, then the mark that still finds its tools once they are orphaned."""
    env = {
        key: value
        for key, value in base.items()
        if key not in _DROPPED_NAMES and not key.startswith(_DROPPED_PREFIXES)
    }
    env.update(extra)
    env[process_tree.MARK_VARIABLE] = mark
    return env
