"""Finding the processes a test's own aicli started, by the mark they all carry.

Tests on a shared machine must not mistake another test's ``sleep`` for theirs,
so they look only at processes whose mark starts with their own prefix.
"""

from __future__ import annotations

import psutil

from aicli.actors import process_tree


def marked_running(mark_prefix: str, needle: str) -> list[psutil.Process]:
    """Live processes under ``mark_prefix`` whose command line contains ``needle``."""
    found = []
    for process in process_tree.marked_processes(mark_prefix, prefix=True):
        try:
            if needle in " ".join(process.cmdline()):
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found
