"""``aicli serve``: the runtime behind Waitress, stopped cleanly by SIGTERM or SIGINT.

The flags are generated from ``Settings`` so the command line, ``AICLI_*``
variables and ``Runtime.start`` can never disagree; a flag left out is None,
which lets ``Settings.resolve`` fall back to the environment, then the default.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from aicli import __version__
from aicli.errors import AicliError
from aicli.log import configure as configure_logging
from aicli.log import flush as flush_logs
from aicli.settings import Settings, setting_fields

log = logging.getLogger("aicli")

# Secrets stay off the command line (visible in `ps`): use AICLI_API_TOKEN or --api-token-file.
SECRET_SETTINGS = frozenset({"api_token"})


def version() -> str:
    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aicli", description="Run tasks inside Claude Code sessions over HTTP."
    )
    parser.add_argument("--version", action="version", version=f"aicli {version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="Serve the HTTP API.",
        description="Serve the HTTP API. Every flag also reads AICLI_<NAME> from the environment.",
    )
    for name, default, help_text in setting_fields():
        if name in SECRET_SETTINGS:
            continue
        kind = type(default) if default is not None else str
        serve.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=kind,
            default=None,
            metavar=name.upper(),
            help=f"{help_text} (env AICLI_{name.upper()}; default: {default})",
        )
    return parser


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(overrides: dict[str, Any]) -> int:
    # Imported here so `aicli --version` stays fast and works without a database.
    from aicli.http import Server, create_app
    from aicli.http.server import raise_open_file_limit
    from aicli.runtime import Runtime

    settings = Settings.resolve(overrides)
    configure_logging(settings.log_level, settings.log_format, batched=True)
    if not is_loopback(settings.host) and not settings.api_token:
        banner = "!" * 78
        print(
            f"{banner}\nWARNING: aicli is listening on {settings.host} with no API token: anyone "
            "who can reach this port can run commands on this machine. Set AICLI_API_TOKEN or "
            f"--api-token-file.\n{banner}",
            file=sys.stderr,
        )
    raise_open_file_limit(settings.connection_limit)
    runtime = Runtime.start(**overrides)
    try:
        server = Server(
            create_app(runtime),
            host=runtime.settings.host,
            port=runtime.settings.port,
            threads=runtime.settings.threads,
            max_streams=runtime.settings.max_streams,
            connection_limit=runtime.settings.connection_limit,
            channel_timeout=runtime.settings.channel_timeout,
        )
    except BaseException:
        runtime.stop()
        raise

    def on_signal(signum: int, frame: FrameType | None) -> None:
        server.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("aicli %s serving on %s", version(), server.url)
    flush_logs()  # the line people and scripts wait for
    server.run()

    log.info(
        "stopping: no new connections; running tasks get %gs to finish",
        runtime.settings.shutdown_grace,
    )
    stopper = threading.Thread(target=_wind_down, args=(runtime,), name="aicli-stop")
    stopper.start()
    server.drain(while_running=stopper.is_alive)
    stopper.join()
    server.close()
    log.info("stopped")
    return 0


def _wind_down(runtime: Any) -> None:
    try:
        runtime.shutdown()
    finally:
        runtime.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {key: value for key, value in vars(args).items() if key != "command"}
    try:
        return serve(overrides)
    except AicliError as ex:
        print(f"aicli: {ex.message}", file=sys.stderr)
        return 2
    except OSError as ex:
        print(f"aicli: {ex}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
