"""The terminal client: ``aicli run``, ``aicli sessions|tasks|approvals ...``.

It speaks only the public HTTP API, through ``aicli.client.Client``, so it
works against any aicli server the same way: a local one or one elsewhere.
``aicli.console.parser`` declares the commands and imports nothing heavy (so
``aicli --version`` stays fast); ``aicli.console.commands.dispatch`` runs one.

Where: ``--url`` or ``AICLI_URL`` (default ``http://127.0.0.1:8080``). Who:
``--token-file`` or ``AICLI_TOKEN`` (optional). A token is never a flag: a
command line is visible to every user of the machine (``ps``).
"""
