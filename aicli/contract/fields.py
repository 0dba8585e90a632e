"""The field types request bodies are built from: each a bound and a pattern in one place.

A bound written here is enforced while decoding and shown in the OpenAPI document
at once. Text that reaches the database or a command line must not hold a NUL
(PostgreSQL and ``execve`` refuse it), so every string pattern excludes it.
Strings passed to the CLI as one argument are capped at 25,000 characters,
which is at most 100,000 bytes of UTF-8, well inside Linux's 128 KiB per
argument. "Blank" means ASCII whitespace only, the same in Python and in the
ECMAScript regexes of JSON Schema.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

NO_NUL = "^[^\x00]*$"
# At least one character that is neither NUL nor ASCII whitespace, and no NUL anywhere.
NOT_BLANK = "^[^\x00]*[^\x00\t\n\x0b\x0c\r ][^\x00]*$"
MAX_ARGUMENT_CHARS = 25_000
MAX_COMMAND_CHARS = 100_000
MAX_TURNS = 10_000
# A week: far beyond any real turn.
MAX_TIMEOUT_S = 7 * 24 * 3600.0
MAX_APPROVAL_TIMEOUT_S = 604_800.0
DEFAULT_APPROVAL_TIMEOUT_S = 3600.0

Text = Annotated[str, Meta(pattern=NO_NUL)]
Argument = Annotated[str, Meta(max_length=MAX_ARGUMENT_CHARS, pattern=NO_NUL)]
NonBlankArgument = Annotated[str, Meta(max_length=MAX_ARGUMENT_CHARS, pattern=NOT_BLANK)]
ToolName = Annotated[str, Meta(min_length=1, max_length=200, pattern=NOT_BLANK)]
ToolList = Annotated[list[ToolName], Meta(max_length=100)]
Metadata = dict[Annotated[str, Meta(max_length=256, pattern=NO_NUL)], Text]
Command = Annotated[str, Meta(min_length=1, max_length=MAX_COMMAND_CHARS, pattern=NOT_BLANK)]
Workdir = Annotated[str, Meta(min_length=1, max_length=4096, pattern=NOT_BLANK)]
Seconds = Annotated[float, Meta(gt=0, le=MAX_TIMEOUT_S)]
# A credential goes out as an HTTP header value: visible ASCII, no whitespace, no NUL. The
# lookahead is for Python, whose ``$`` also matches before a final newline (ECMAScript's not).
VISIBLE_ASCII = r"^[!-~]+$(?!\n)"
MAX_SECRET_CHARS = 4096
Secret = Annotated[str, Meta(min_length=1, max_length=MAX_SECRET_CHARS, pattern=VISIBLE_ASCII)]
WholeNumber = Annotated[float, Meta(ge=1, le=MAX_TURNS, multiple_of=1)]
# 1.2: a path a policy names; it need not exist yet, so it must be absolute to mean anything.
AbsolutePath = Annotated[str, Meta(min_length=1, max_length=4096, pattern="^/[^\x00]*$")]


def _domain_pattern() -> str:
    """A host name (``*.`` for its subdomains) or an IP literal, each with an optional port.

    Written out in full (RFC 1123 labels, RFC 3986 addresses), so that the schema is the
    whole rule: what matches is what the service takes. A name's last label starts with a
    letter, which keeps a name apart from an IPv4 address that is out of range.
    """
    label = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    last = "[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    octet = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
    ipv4 = rf"{octet}(?:\.{octet}){{3}}"
    h16 = "[0-9A-Fa-f]{1,4}"
    ls32 = f"(?:{h16}:{h16}|{ipv4})"

    def before(most: int) -> str:  # up to ``most`` groups and a last one before the "::"
        return f"(?:(?:{h16}:){{0,{most}}}{h16})?" if most else f"(?:{h16})?"

    ipv6 = "|".join(
        (
            f"(?:{h16}:){{6}}{ls32}",
            f"::(?:{h16}:){{5}}{ls32}",
            f"{before(0)}::(?:{h16}:){{4}}{ls32}",
            f"{before(1)}::(?:{h16}:){{3}}{ls32}",
            f"{before(2)}::(?:{h16}:){{2}}{ls32}",
            f"{before(3)}::{h16}:{ls32}",
            f"{before(4)}::{ls32}",
            f"{before(5)}::{h16}",
            f"{before(6)}::",
        )
    )
    number = "[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]"
    port = f"(?::(?:{number}))?"
    host = rf"(?:\*\.)?(?:{label}\.)*{last}|{ipv4}|\[(?:{ipv6})\]"
    return f"^(?:{host}){port}$"


DOMAIN = _domain_pattern()
Domain = Annotated[
    str,
    Meta(
        max_length=300,
        pattern=DOMAIN,
        description="A host name, `*.` and a name (its subdomains), an IPv4 address or an"
        " IPv6 one in brackets; each with an optional `:port`. No scheme, no path.",
    ),
]
DomainList = Annotated[list[Domain], Meta(max_length=100)]
PathList = Annotated[list[Workdir], Meta(max_length=100)]

# A count of a limit: whole, as JSON may write it (5 or 5.0), and one a database can hold.
LimitCount = Annotated[float, Meta(ge=0, le=1_000_000_000, multiple_of=1)]
# 1.2: characters of stored text (prompts, answers, metadata, event data). The cap sits
# well under 2**53, so that no JSON number past it rounds down to it as a float.
StoredBytes = Annotated[float, Meta(ge=0, le=1_000_000_000_000_000, multiple_of=1)]
