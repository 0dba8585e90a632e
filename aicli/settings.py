"""Every setting of aicli in one place, each with its ``AICLI_*`` variable.

``aicli serve`` flags, ``Runtime.start(**kwargs)`` and the environment all
resolve through ``Settings.resolve`` so that the three can never disagree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from aicli.errors import InvalidRequest


@dataclass(frozen=True)
class Settings:
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on."})
    port: int = field(default=8080, metadata={"help": "Port to listen on."})
    threads: int = field(
        default=32,
        metadata={
            "help": "Waitress worker threads for ordinary requests; streams get threads of "
            "their own on top (up to max_streams more), so they never starve these."
        },
    )
    max_streams: int = field(
        default=1000,
        metadata={
            "help": "Open SSE streams, long-polls and Prefer: wait submits at once; past it, "
            "503 with Retry-After (a submit is then accepted without the wait)."
        },
    )
    connection_limit: int = field(
        default=2000,
        metadata={
            "help": "Client connections open at once; past it, new ones wait to be accepted. "
            "Each is a file descriptor: aicli serve raises its open-file limit to fit."
        },
    )
    channel_timeout: int = field(
        default=60,
        metadata={
            "help": "Seconds a connection may go without traffic while no request is being "
            "served (idle keep-alive, or a request half-sent) before it is closed: long enough "
            "to reuse a keep-alive connection, short enough that stalled clients soon give "
            "theirs back. Streams and long-polls are never cut."
        },
    )
    database_url: str = field(
        default="sqlite:///aicli.db",
        metadata={"help": "sqlite:///path or postgresql://user@host:port/db."},
    )
    claude_bin: str | None = field(
        default=None,
        metadata={"help": "The Claude Code CLI; else `claude` on PATH, else .tools/."},
    )
    max_sessions: int = field(default=100, metadata={"help": "Open sessions at once (429)."})
    max_pending_per_session: int = field(
        default=100, metadata={"help": "Pending tasks per session (429 with Retry-After)."}
    )
    max_live_processes: int = field(
        default=8,
        metadata={
            "help": "Claude processes alive at once; the least recently used idle one "
            "is stopped to make room (~115 MB each)."
        },
    )
    idle_process_timeout: float = field(
        default=600.0,
        metadata={"help": "Seconds after which an idle Claude process is stopped."},
    )
    cancel_grace: float = field(
        default=5.0,
        metadata={"help": "Seconds a cancelled turn has to end before its process is killed."},
    )
    shutdown_grace: float = field(
        default=10.0,
        metadata={"help": "Seconds running tasks get to finish on SIGTERM before interrupt."},
    )
    api_token: str | None = field(
        default=None,
        metadata={"help": "Bearer token every route but /healthz requires."},
    )
    api_token_file: str | None = field(
        default=None, metadata={"help": "A file whose first line is the API token."}
    )
    workspace_root: str | None = field(
        default=None, metadata={"help": "Session workdirs must lie inside this directory."}
    )
    max_body_bytes: int = field(
        default=1024 * 1024, metadata={"help": "Largest request body (413)."}
    )
    max_command_chars: int = field(
        default=100_000, metadata={"help": "Longest task command (400)."}
    )
    node_url: str | None = field(
        default=None, metadata={"help": "How peers and people reach this node (GET /nodes)."}
    )
    allowed_hosts: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated host names a request's Host may name besides localhost, "
            "loopback addresses, --host and the host of --node-url (else 421, against DNS "
            "rebinding); * allows any Host, behind a proxy that rewrites it."
        },
    )
    lease_ttl: float = field(
        default=10.0,
        metadata={
            "help": "Seconds a node's lease in the database lasts; it is renewed every third "
            "of it, by the database's clock."
        },
    )
    retain_days: float = field(
        default=0.0,
        metadata={
            "help": "Delete ended tasks (with their events and approvals) that ended more than "
            "this many days ago, and the transcripts of sessions closed as long ago; checked "
            "hourly, by one node at a time. 0 keeps everything."
        },
    )
    sandbox: str = field(
        default="on",
        metadata={
            "help": "on: every Claude CLI runs inside Anthropic's sandbox runtime (srt), seeing "
            "only its workdir, its session's own directory and the system; the server refuses "
            "to start if srt cannot run here. off: sessions run unsandboxed, as the server's "
            "user, with the server's view of the machine."
        },
    )
    state_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where each session's own Claude config, HOME and temp files live on this "
            "node; default $XDG_STATE_HOME/aicli or ~/.local/state/aicli."
        },
    )
    log_level: str = field(default="INFO", metadata={"help": "Log level."})
    log_format: str = field(
        default="logfmt", metadata={"help": "Log lines as logfmt (key=value) or json."}
    )

    @classmethod
    def resolve(
        cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Defaults, then ``AICLI_<NAME>`` variables, then explicit values (not None).

        A token that was asked for but cannot work (an empty token file, a blank
        or space-padded token) is an error here, so that running without auth is
        never an accident, for ``aicli serve`` and embedders alike.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        known = {f.name: f for f in fields(cls)}
        for name, spec in known.items():
            raw = environ.get(f"AICLI_{name.upper()}")
            if raw is not None and raw != "":
                values[name] = _convert(name, spec.type, raw)
        for name, value in (overrides or {}).items():
            if name not in known:
                raise TypeError(f"Unknown setting {name!r}")
            if value is not None:
                values[name] = value
        if values.get("api_token") is None and values.get("api_token_file"):
            lines = Path(values["api_token_file"]).read_text().strip().splitlines()
            if not lines:
                raise InvalidRequest(
                    f"The API token file {values['api_token_file']!r} is empty.",
                    {"setting": "api_token_file"},
                )
            values["api_token"] = lines[0]
        token = values.get("api_token")
        if token is not None and (not token.strip() or token != token.strip()):
            raise InvalidRequest(
                "The API token must not be blank or start or end with whitespace.",
                {"setting": "api_token"},
            )
        if values.get("sandbox", "on") not in SANDBOX_MODES:
            raise InvalidRequest(
                f"The sandbox setting must be on or off, not {values['sandbox']!r}.",
                {"setting": "sandbox"},
            )
        if not values.get("state_dir"):
            values["state_dir"] = default_state_dir(environ)
        return cls(**values)


SANDBOX_MODES = ("on", "off")


def default_state_dir(environ: Mapping[str, str]) -> str:
    """``$XDG_STATE_HOME/aicli``, else ``~/.local/state/aicli`` (the XDG base directories)."""
    xdg = environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return str(base / "aicli")


def _convert(name: str, kind: Any, raw: str) -> Any:
    text = str(kind)
    try:
        if text.startswith("int"):
            return int(raw)
        if text.startswith("float"):
            return float(raw)
    except ValueError:
        raise InvalidRequest(
            f"AICLI_{name.upper()} must be a number, not {raw!r}.", {"setting": name}
        ) from None
    return raw


def setting_fields() -> list[tuple[str, Any, str]]:
    """(name, default, help) of every setting, for the CLI and the README table."""
    return [(f.name, f.default, f.metadata.get("help", "")) for f in fields(Settings)]
