"""A Python client of aicli's HTTP API, with the methods of ``aicli.Runtime``.

    from aicli.client import Client

    with Client("http://127.0.0.1:8080", token="aicli_...") as client:
        session = client.open_session(workdir="/srv/project")
        task = client.submit(session.id, "Summarise README.md", wait=120)
        print(task.output)

It speaks only the public API (``docs/api.md``) and raises the runtime's
exception classes (``aicli.errors``) for the API's error codes.
"""

from aicli.client.client import Client

__all__ = ["Client"]
