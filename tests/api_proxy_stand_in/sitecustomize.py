"""TEMPORARY, until aicli/actors/api_proxy.py lands from its own branch (issue #26): makes
``aicli.actors.api_proxy`` importable as the stand-in beside this file, in the test process
and in every ``aicli serve`` a test starts (tests/conftest.py puts this directory on
PYTHONPATH). Found last: the real module wins as soon as it exists. Delete on merge."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

_STAND_IN = Path(__file__).with_name("api_proxy.py")


class _StandInFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
        if fullname != "aicli.actors.api_proxy":
            return None
        return importlib.util.spec_from_file_location(fullname, _STAND_IN)


sys.meta_path.append(_StandInFinder())
