"""Where the server is and who we are: flags first, then the environment."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from aicli.console.parser import DEFAULT_URL
from aicli.errors import AicliError, InvalidRequest, Unauthorized

if TYPE_CHECKING:
    from aicli.client import Client


def base_url(args: argparse.Namespace) -> str:
    url = (getattr(args, "url", None) or os.environ.get("AICLI_URL") or DEFAULT_URL).strip()
    if not url.startswith(("http://", "https://")):
        raise InvalidRequest(f"The server URL must start with http:// or https://, not {url!r}.")
    return url.rstrip("/")


def token(args: argparse.Namespace) -> str | None:
    """From ``--token-file`` (its first line), else ``AICLI_TOKEN``; None when neither is set."""
    path = getattr(args, "token_file", None)
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as ex:
            raise InvalidRequest(f"Cannot read the token file {path}: {ex}.") from None
        lines = text.strip().splitlines()
        if not lines or not lines[0].strip():
            raise InvalidRequest(f"The token file {path} is empty.")
        return lines[0].strip()
    return os.environ.get("AICLI_TOKEN", "").strip() or None


def client(args: argparse.Namespace) -> Client:
    from aicli.client import Client

    return Client(base_url(args), token=token(args))


def explained(ex: AicliError, args: argparse.Namespace) -> str:
    """A 401 alone does not say what to fix: which token was sent, if any, and where from."""
    message = ex.message
    if isinstance(ex, Unauthorized):
        if token(args) is None:
            hint = "needs a token: set AICLI_TOKEN or use --token-file"
        else:
            source = "the token file" if getattr(args, "token_file", None) else "AICLI_TOKEN"
            hint = f"refused the token from {source}"
        message = f"{message.rstrip('.')}: {base_url(args)} {hint}."
    return message
