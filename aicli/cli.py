"""``aicli serve``: the runtime behind Waitress, stopped cleanly by SIGTERM or SIGINT.

The flags are generated from ``Settings`` so the command line, ``AICLI_*``
variables and ``Runtime.start`` can never disagree; a flag left out is None,
which lets ``Settings.resolve`` fall back to the environment, then the default.

``aicli principals create|list|revoke`` work on the database directly, with the
server running or not (as Django's ``createsuperuser`` does), so the first
admin token can be made before anyone can call the API. A new token is printed
once, on a line of its own, and nowhere else: the store keeps only its hash.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from aicli import __version__, validation
from aicli.console import parser as console_parser
from aicli.console.output import cell
from aicli.errors import AicliError, InvalidRequest
from aicli.log import configure as configure_logging
from aicli.log import flush as flush_logs
from aicli.settings import Settings, setting_fields

if TYPE_CHECKING:
    from aicli.contract import Principal, PrincipalCreate
    from aicli.storage import Store

log = logging.getLogger("aicli")

# Secrets stay off the command line (visible in `ps`): use AICLI_API_TOKEN or --api-token-file,
# AICLI_SECRET_KEY or --secret-key-file.
SECRET_SETTINGS = frozenset({"api_token", "secret_key"})


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
    add_principal_commands(commands)
    console_parser.add_commands(commands)  # run, sessions, tasks, approvals: the HTTP client
    return parser


def add_principal_commands(commands: Any) -> None:
    """``aicli principals create|list|revoke``, each with its own ``--database-url``."""
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--database-url",
        default=None,
        metavar="URL",
        help=f"The database (env AICLI_DATABASE_URL; default: {Settings.database_url}).",
    )
    principals = commands.add_parser(
        "principals",
        help="Create, list and revoke principals (users with their own tokens).",
        description="Work on the database directly, whether the server runs or not.",
    )
    actions = principals.add_subparsers(dest="action", required=True)
    create = actions.add_parser(
        "create", parents=[database], help="Create a principal and print its token once."
    )
    create.add_argument("name", help="A name for people; need not be unique.")
    create.add_argument("--admin", action="store_true", help="Role admin (default: user).")
    create.add_argument(
        "--workspace-root",
        metavar="DIR",
        help="Confine its workdirs to this directory (inside AICLI_WORKSPACE_ROOT if set).",
    )
    create.add_argument("--max-sessions", type=int, metavar="N", help="Open sessions at once.")
    create.add_argument(
        "--max-pending-per-session", type=int, metavar="N", help="Pending tasks per session."
    )
    create.add_argument(
        "--budget-usd", type=float, metavar="X", help="Total Claude cost allowed, in USD."
    )
    create.add_argument(
        "--max-stored-bytes",
        type=int,
        metavar="N",
        help="Characters of text its sessions may store (prompts, answers, metadata, events).",
    )
    create.add_argument(
        "--policy",
        metavar="JSON",
        help="What its sessions may ask for, as in POST /principals: allowed_tools,"
        " permission_modes, network_domains, read_paths (left out: the role's default; a"
        ' user\'s is {"network_domains": [], "read_paths": []}).',
    )
    actions.add_parser("list", parents=[database], help="List every principal.")
    revoke = actions.add_parser(
        "revoke", parents=[database], help="Revoke a principal: its token stops working at once."
    )
    revoke.add_argument("id", help="The principal's id.")


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
    from aicli.http.heap import return_freed_memory
    from aicli.http.server import raise_open_file_limit
    from aicli.runtime import Runtime

    return_freed_memory()

    settings = Settings.resolve(overrides)
    configure_logging(settings.log_level, settings.log_format, batched=True)
    raise_open_file_limit(settings.connection_limit)
    runtime = Runtime.start(**overrides)
    # Open to all (no token, no principal) and reachable from elsewhere: say so loudly.
    open_to_all = not settings.api_token and not runtime.store.principals.count()
    if open_to_all and not is_loopback(settings.host):
        banner = "!" * 78
        print(
            f"{banner}\nWARNING: aicli is listening on {settings.host} with no API token: "
            "anyone who can reach this port can run commands on this machine. Set "
            f"AICLI_API_TOKEN or --api-token-file, or create principals.\n{banner}",
            file=sys.stderr,
        )
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


def principals(args: argparse.Namespace) -> int:
    """One ``aicli principals`` action on the database that ``aicli serve`` would use.

    The request is checked before the store is opened, so that a mistyped flag
    leaves no new database file behind.
    """
    # Imported here so `aicli --version` stays fast and works without a database.
    from aicli.storage import open_store

    settings = Settings.resolve({"database_url": args.database_url})
    configure_logging(settings.log_level, settings.log_format)
    request = principal_request(args, settings.workspace_root) if args.action == "create" else None
    store = open_store(settings.database_url)
    try:
        if request is not None:
            return create_principal(store, request)
        if args.action == "list":
            return list_principals(store)
        return revoke_principal(store, args.id)
    finally:
        store.close()


def principal_request(args: argparse.Namespace, global_root: str | None) -> PrincipalCreate:
    """The flags as a ``PrincipalCreate``, validated as ``POST /principals`` validates a body."""
    from aicli.contract import PrincipalCreate, convert

    fields: dict[str, Any] = {
        "name": args.name,
        "role": "admin" if args.admin else "user",
        "workspace_root": args.workspace_root,
        "limits": {
            "max_sessions": args.max_sessions,
            "max_pending_per_session": args.max_pending_per_session,
            "budget_usd": args.budget_usd,
            "max_stored_bytes": args.max_stored_bytes,
            "policy": policy_of(args.policy),
        },
    }
    request = convert(fields, PrincipalCreate)  # a blank or overlong DIR is refused here first
    if request.workspace_root is None:
        return request
    fields["workspace_root"] = validation.principal_root(request.workspace_root, global_root)
    return convert(fields, PrincipalCreate)


def policy_of(text: str | None) -> Any:
    """``--policy`` as JSON, which ``convert`` then checks as it checks a body's policy."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidRequest(
            f"'--policy' must be JSON, like '{{\"network_domains\": []}}', not {text!r}.",
            {"field": "limits.policy"},
        ) from None


def create_principal(store: Store, request: PrincipalCreate) -> int:
    """Print the new principal and, on the last line, its token: the only time it is shown."""
    from aicli.contract import encode

    principal = store.principals.create(request)
    print(f"id\t{principal.id}")
    print(f"name\t{cell(principal.name)}")
    print(f"role\t{principal.role}")
    print(f"workspace_root\t{cell(principal.workspace_root or '-')}")
    print(f"limits\t{limits_text(principal)}")
    print(f"policy\t{encode(principal.limits.policy).decode()}")
    print("token (shown only now: aicli keeps only its hash and cannot show it again):")
    print(principal.token, flush=True)
    return 0


def list_principals(store: Store) -> int:
    """Every principal, oldest first, one tab-separated line each under a header."""
    rows: list[Principal] = []
    cursor: str | None = None
    while True:
        page = store.principals.list(limit=200, cursor=cursor, order="asc")
        rows.extend(page.data)
        if not page.has_more:
            break
        cursor = page.next_cursor
    print("\t".join(("ID", "NAME", "ROLE", "STATUS", "WORKSPACE_ROOT", "LIMITS", "COST_USD")))
    for principal in rows:
        status = "active" if principal.revoked_at is None else "revoked"
        columns = (
            principal.id,
            cell(principal.name),
            str(principal.role),
            status,
            cell(principal.workspace_root or "-"),
            limits_text(principal),
            f"{principal.total_cost_usd:.4f}",
        )
        print("\t".join(columns))
    return 0


def revoke_principal(store: Store, principal_id: str) -> int:
    """Revoke and say when: every request with its token is refused from now on."""
    before = store.principals.get(principal_id)
    principal = store.principals.revoke(principal_id)
    when = principal.revoked_at.isoformat() if principal.revoked_at else "?"
    if before.revoked_at is not None:
        print(f"Principal {principal.id} ({cell(principal.name)}) was already revoked at {when}.")
    else:
        print(
            f"Revoked principal {principal.id} ({cell(principal.name)}) at {when}: "
            "its token stops working at once."
        )
    return 0


def limits_text(principal: Principal) -> str:
    """The limits that are set, as ``name=value`` pairs; ``-`` when there are none."""
    limits = principal.limits
    pairs = [
        ("max_sessions", limits.max_sessions),
        ("max_pending_per_session", limits.max_pending_per_session),
        ("budget_usd", limits.budget_usd),
        ("max_stored_bytes", limits.max_stored_bytes),
    ]
    shown = [(name, value) for name, value in pairs if value is not None]
    # 15 significant digits: a budget of 1e6 reads 1000000, not 1e+06.
    return ",".join(f"{name}={value:.15g}" for name, value in shown) or "-"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in console_parser.COMMANDS:
        # Imported here so `aicli --version` stays fast; prints its own errors.
        from aicli.console.commands import dispatch

        return dispatch(args)
    try:
        if args.command == "principals":
            return principals(args)
        overrides = {key: value for key, value in vars(args).items() if key != "command"}
        return serve(overrides)
    except AicliError as ex:
        print(f"aicli: {ex.message}", file=sys.stderr)
        return 2
    except OSError as ex:
        print(f"aicli: {ex}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
