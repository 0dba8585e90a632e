"""Request bodies: what ``POST``, ``PATCH`` and ``PUT`` take, and embedders' keyword arguments.

They forbid unknown fields, so that a misspelt option is an error rather than a
default silently taken, and are frozen, so that what was checked is what runs. A
docstring here is the body's ``description`` in the OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from aicli.contract.enums import ApprovalMode, CredentialKind, Decision, PermissionMode, Role
from aicli.contract.fields import (
    MAX_APPROVAL_TIMEOUT_S,
    NOT_BLANK,
    AbsolutePath,
    Argument,
    Command,
    DomainList,
    LimitCount,
    Metadata,
    NonBlankArgument,
    PathList,
    Seconds,
    Secret,
    StoredBytes,
    Text,
    ToolList,
    WholeNumber,
    Workdir,
)
from aicli.errors import InvalidRequest

_REQUEST = {"forbid_unknown_fields": True, "frozen": True, "kw_only": True}


class SessionCreate(Struct, **_REQUEST):
    """``POST /sessions``: only ``workdir`` is required; ``null`` means not given."""

    workdir: Workdir
    model: NonBlankArgument | None = None
    permission_mode: PermissionMode | None = None
    allowed_tools: ToolList | None = None
    disallowed_tools: ToolList | None = None
    append_system_prompt: Argument | None = None
    # A whole number; JSON Schema counts 5.0 as an integer too, so it is taken as one.
    max_turns: WholeNumber | None = None
    metadata: Metadata | None = None
    # 1.1: "ask" has each tool use the session's permissions do not allow wait for a person.
    approvals: ApprovalMode | None = None
    approval_timeout_s: Annotated[float, Meta(gt=0, le=MAX_APPROVAL_TIMEOUT_S)] | None = None
    # 1.2: what its sandbox may reach besides the workdir and the API, within its owner's policy.
    network_domains: DomainList | None = None
    read_paths: PathList | None = None


class TaskSubmit(Struct, **_REQUEST):
    """``POST /sessions/{id}/tasks``."""

    command: Command
    timeout_s: Seconds | None = None
    metadata: Metadata | None = None


class SessionPolicy(Struct, **_REQUEST):
    """1.2: what a principal's sessions may ask for (null: any; left out: the role's default)."""

    # A user's default: no network but the API, no extra paths (``policy.of_role``). A
    # principal's answer shows every field.

    # Tool names (``Bash``, not ``Bash(git:*)``): its sessions' Claude has no other tool.
    allowed_tools: (
        Annotated[
            list[Annotated[str, Meta(pattern="^[A-Za-z0-9_.-]{1,200}$")]], Meta(max_length=100)
        ]
        | None
        | msgspec.UnsetType
    ) = msgspec.UNSET
    permission_modes: list[PermissionMode] | None | msgspec.UnsetType = msgspec.UNSET
    # Domains its sessions' sandboxes may reach besides the Anthropic API.
    network_domains: DomainList | None | msgspec.UnsetType = msgspec.UNSET
    # Directories inside which its sessions may name ``read_paths``.
    read_paths: Annotated[list[AbsolutePath], Meta(max_length=100)] | None | msgspec.UnsetType = (
        msgspec.UNSET
    )


class PrincipalLimits(Struct, **_REQUEST):
    max_sessions: LimitCount | None = None
    max_pending_per_session: LimitCount | None = None
    budget_usd: Annotated[float, Meta(ge=0, le=1e12)] | None = None
    max_stored_bytes: StoredBytes | None = None
    policy: SessionPolicy | None = None  # 1.2; null when given: the role's default


class PrincipalCreate(Struct, **_REQUEST):
    """``POST /principals`` (1.1)."""

    name: Annotated[str, Meta(min_length=1, max_length=200, pattern=NOT_BLANK)]
    role: Role = Role.USER
    workspace_root: Workdir | None = None
    limits: PrincipalLimits | None = None


class PrincipalUpdate(Struct, **_REQUEST):
    """``PATCH /principals/{id}`` (1.2): ``limits`` replaces all of the principal's limits."""

    limits: PrincipalLimits


class CredentialsSet(Struct, **_REQUEST):
    """``PUT /me/credentials`` (1.2): exactly one of the two, a string; never shown back."""

    # Absent rather than null (UNSET), so that the schema can say "exactly one" (one
    # property, no null) and every body it allows is one the server takes.
    anthropic_api_key: Secret | msgspec.UnsetType = msgspec.UNSET
    anthropic_auth_token: Secret | msgspec.UnsetType = msgspec.UNSET

    def given(self) -> tuple[CredentialKind, str]:
        """The kind and the secret; ``InvalidRequest`` unless exactly one was given.

        A struct cannot say "exactly one of these two fields" (the OpenAPI document
        adds it by hand, as ``minProperties`` and ``maxProperties``), so it is checked
        here, in the words of the other refusals.
        """
        found = [
            (kind, value)
            for kind, value in (
                (CredentialKind.API_KEY, self.anthropic_api_key),
                (CredentialKind.AUTH_TOKEN, self.anthropic_auth_token),
            )
            if isinstance(value, str)
        ]
        if len(found) != 1:
            raise InvalidRequest(
                "Give exactly one of 'anthropic_api_key' and 'anthropic_auth_token'.",
                {"field": "anthropic_api_key"},
            )
        return found[0]


class ApprovalDecision(Struct, **_REQUEST):
    """``POST /approvals/{id}`` (1.1)."""

    decision: Decision
    message: Argument | None = None
    updated_input: dict[str, Any] | None = None
    answers: dict[Text, Text] | None = None
    remember: bool = False
