"""The closed sets of words the API takes and gives: statuses, modes, roles and kinds.

Each is a ``StrEnum`` so that a member is its own JSON string (msgspec writes and
reads it, and the OpenAPI document lists its values), and so that code compares it
with plain strings from the database without converting. A docstring on one of
these becomes its schema's ``description``: write a comment instead unless the
API reference should say it.
"""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class SessionStatus(StrEnum):
    IDLE = "idle"
    BUSY = "busy"
    CLOSED = "closed"


class PermissionMode(StrEnum):
    DEFAULT = "default"
    ACCEPT_EDITS = "acceptEdits"
    PLAN = "plan"
    BYPASS_PERMISSIONS = "bypassPermissions"


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"


class ApprovalMode(StrEnum):
    OFF = "off"
    ASK = "ask"


class ApprovalKind(StrEnum):
    TOOL = "tool"
    QUESTION = "question"


class CredentialKind(StrEnum):
    """Which header a principal's own credential goes out in: ``x-api-key`` or a bearer."""

    API_KEY = "api_key"
    AUTH_TOKEN = "auth_token"


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    ALLOWED = "allowed"
    DENIED = "denied"
    EXPIRED = "expired"


class Decision(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
