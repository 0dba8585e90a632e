"""Which ``Host`` and ``Origin`` headers name this server.

A web page can make a browser send requests to any address, loopback included. Two
headers tell such a request from one a person or a program meant for this server:

- ``Host``: a page whose name the attacker pointed at 127.0.0.1 (DNS rebinding) is
  same-origin to itself, so the browser lets it read the answers; but its requests
  name the attacker's host. Only names of this server are served: ``localhost``, a
  loopback address, the address it binds, the host of its ``node_url``, and the
  ``allowed_hosts`` list. ``*`` there turns the check off, for a proxy that rewrites
  ``Host``. The port is not compared: a proxy may forward from another one, and a
  rebinding attacker controls the name, not the port.
- ``Origin``: a browser names the page that sent a ``POST`` or a ``DELETE``. A page
  of another origin may send some requests without asking first (CORS "simple"
  requests: no body, or a body typed ``text/plain``); the answer is hidden from it,
  but the request has done its work. So a request that changes something and names
  an origin must name this server's: the host and port of its ``Host``. The scheme is
  not compared: one port serves one scheme, and behind a proxy that ends TLS the
  page's ``https`` meets our ``http``. Programs (curl, ``requests``, the client) send
  no ``Origin`` and are not affected.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from aicli.errors import InvalidRequest
from aicli.settings import Settings

ANY_HOST = "*"
DEFAULT_PORTS = {"http": "80", "https": "443"}
HOST = re.compile(r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[^\[\]:,\s@/]+))(?::(?P<port>[0-9]*))?")


def split_host(value: str) -> tuple[str, str | None] | None:
    """``(host, port)`` of a ``Host`` header: lower case, without brackets or a final dot;
    None if it is not one (two headers joined, a port that is no number)."""
    found = HOST.fullmatch(value.strip().lower())
    if found is None:
        return None
    host = found.group("v6") or found.group("name")
    return host.rstrip("."), found.group("port") or None


def _entry(name: str) -> str:
    """The host of a setting's entry, which may also be a bare IPv6 address."""
    parts = split_host(name) if name.count(":") < 2 or name.startswith("[") else None
    return parts[0] if parts else name.strip().lower()


def _listed(entry: str) -> str:
    """The host of an ``allowed_hosts`` entry; ``InvalidRequest`` for one that no ``Host``
    header could match (a URL, a wildcard), which would otherwise be kept in silence and
    refuse the very name its operator meant to allow."""
    host = _entry(entry)
    if split_host(host if ":" not in host else f"[{host}]") is None or "*" in host:
        raise InvalidRequest(
            f"The allowed hosts (AICLI_ALLOWED_HOSTS, --allowed-hosts) hold {entry!r}, which "
            "no Host header can match: list host names or addresses, each with an optional "
            "port (no scheme, path or wildcard), or * alone to allow any host.",
            {"setting": "allowed_hosts"},
        )
    return host


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """The host names this server answers to besides loopback ones; None: any."""
    listed = [entry.strip() for entry in (settings.allowed_hosts or "").split(",")]
    if ANY_HOST in listed:
        return None
    names: Iterable[str | None] = [
        settings.host,
        urlsplit(settings.node_url).hostname if settings.node_url else None,
    ]
    return frozenset(_entry(name) for name in names if name) | {
        _listed(entry) for entry in listed if entry
    }


def names_this_server(host_header: str | None, allowed: frozenset[str] | None) -> bool:
    """Whether ``host_header`` names this server. A request without one (HTTP/1.0)
    cannot show it does, so only a server that allows any host takes it."""
    if allowed is None:
        return True
    parts = split_host(host_header) if host_header else None
    return parts is not None and (is_loopback(parts[0]) or parts[0] in allowed)


def same_origin(origin: str, host_header: str | None) -> bool:
    """Whether the page ``origin`` (``scheme://host[:port]``) is on the server ``host_header``
    names. ``null`` (a sandboxed frame, a file) is no origin of ours."""
    parts = urlsplit(origin.strip().lower())
    if parts.scheme not in DEFAULT_PORTS or not parts.netloc or not host_header:
        return False
    default = DEFAULT_PORTS[parts.scheme]
    page, server = split_host(parts.netloc), split_host(host_header)
    if page is None or server is None:
        return False
    return (page[0], page[1] or default) == (server[0], server[1] or default)
