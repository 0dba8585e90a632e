"""What a principal's sessions may ask for (1.2), and the check when one is opened.

An admin sets each principal's policy with its limits. A session that asks for
more than its owner's policy (a tool, a permission mode, a network domain, a
read-only path) is refused with 403, naming the part and the values, before
anything is stored. What the sandbox then lets the session's Claude reach is
the sandbox's business; what the CLI offers at all is ``--tools``, set from the
policy's tools, so a person approving a use cannot hand Claude a tool the
policy leaves out.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import msgspec

from aicli.contract import PermissionMode, Principal, Role, SessionPolicy
from aicli.errors import Forbidden, InvalidRequest

# An admin's sessions may ask for anything; a user's reach no network but the API and no
# path beyond its workdir until an admin says otherwise.
ADMIN_DEFAULT = SessionPolicy(
    allowed_tools=None, permission_modes=None, network_domains=None, read_paths=None
)
USER_DEFAULT = msgspec.structs.replace(ADMIN_DEFAULT, network_domains=[], read_paths=[])


def of_role(role: Role, given: SessionPolicy | None = None) -> SessionPolicy:
    """``given`` with what it leaves out taken from the default of ``role``."""
    default = ADMIN_DEFAULT if role == Role.ADMIN else USER_DEFAULT
    if given is None:
        return default
    fields = {
        name: getattr(default, name) if value is msgspec.UNSET else value
        for name, value in msgspec.structs.asdict(given).items()
    }
    return SessionPolicy(**fields)


def _tool_name(spec: str) -> str:
    """The tool a permission rule names: ``Bash`` of ``Bash(git:*)``."""
    return spec.partition("(")[0].strip()


def admit(principal: Principal | None, fields: dict[str, Any]) -> tuple[str, ...] | None:
    """Refuse a session (its store fields) that asks for more than ``principal``'s policy,
    and return the tools its CLI may offer (None: all).

    A read path is confined before it is looked for, as a workdir is, so that a
    principal cannot probe which paths exist outside its policy.
    """
    policy = principal.limits.policy if principal is not None else None
    if policy is not None:
        _check(principal.name, policy, fields)
    for path in fields["read_paths"]:
        if not os.path.isdir(path):
            raise InvalidRequest(
                f"'read_paths' item {path!r} is not an existing directory.",
                {"field": "read_paths"},
            )
    if policy is None or policy.allowed_tools is None:
        return None
    return tuple(policy.allowed_tools)


def _check(name: str, policy: SessionPolicy, fields: dict[str, Any]) -> None:
    if policy.allowed_tools is not None:
        known = set(policy.allowed_tools)
        asked = fields["allowed_tools"]
        _refuse(name, "allowed_tools", [t for t in asked if _tool_name(t) not in known])
    if policy.permission_modes is not None:
        mode = fields["permission_mode"] or PermissionMode.DEFAULT
        _refuse(name, "permission_mode", [] if mode in policy.permission_modes else [str(mode)])
    if policy.network_domains is not None:
        entries = policy.network_domains
        _refuse(
            name,
            "network_domains",
            [d for d in fields["network_domains"] if not _reaches(entries, d)],
        )
    if policy.read_paths is not None:
        roots = [os.path.realpath(root) for root in policy.read_paths]
        _refuse(name, "read_paths", [p for p in fields["read_paths"] if not _inside(p, roots)])


def _refuse(name: str, field: str, not_allowed: list[str]) -> None:
    if not_allowed:
        raise Forbidden(
            f"The policy of principal {name!r} does not allow {field}: {', '.join(not_allowed)}.",
            {"field": field, "not_allowed": not_allowed},
        )


def _inside(path: str, roots: Iterable[str]) -> bool:
    return any(os.path.commonpath([root, path]) == root for root in roots)


def _split(domain: str) -> tuple[str, str | None]:
    """``(host, port)``, the host in lower case; an IPv6 address keeps its brackets."""
    host, colon, port = domain.rpartition(":")
    if not colon or not port.isdigit():  # "[::1]" ends in "1]", which is no port
        return domain.lower(), None
    return host.lower(), port


def _reaches(entries: Iterable[str], domain: str) -> bool:
    """Whether a policy of ``entries`` covers ``domain``: the same host, or one under a
    ``*.`` entry (a wildcard asked for only under an equal or wider one); a port an entry
    names must be the port asked for."""
    host, port = _split(domain)
    for entry in entries:
        allowed, allowed_port = _split(entry)
        if allowed_port is not None and allowed_port != port:
            continue
        if host == allowed:
            return True
        if allowed.startswith("*.") and host.endswith(allowed[1:]):
            return True
    return False
