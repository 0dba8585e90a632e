"""The HTTP face of aicli: a Falcon app (``create_app``) served by Waitress (``Server``)."""

from aicli.http.app import create_app
from aicli.http.server import Server

__all__ = ["Server", "create_app"]
