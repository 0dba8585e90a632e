"""The size rules of the code base, checked in ``make test``: no module of aicli over 400
lines and no class over 300, so that a file or a class keeps one job a reader can hold.

What must be long is named below with the reason; the rest is read from the source
(``ast``), so a new module or class is held to the rule the day it lands.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "aicli"
MODULE_LINES = 400
CLASS_LINES = 300

# Modules allowed past MODULE_LINES, with why. Keep it short and honest.
LONG_MODULES: dict[str, str] = {
    "aicli/storage/migrations.py": (
        "the schema's history: every past migration stays as it shipped, so databases of "
        "any earlier version upgrade"
    ),
}
# Classes allowed past CLASS_LINES ("path::Class"), with why.
LONG_CLASSES: dict[str, str] = {}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_no_module_is_over_the_limit():
    offenders = [
        f"{_name(path)}: {lines} lines"
        for path in _modules()
        if (lines := _lines(path)) > MODULE_LINES and _name(path) not in LONG_MODULES
    ]
    assert not offenders, f"modules over {MODULE_LINES} lines (split them): {offenders}"


def test_no_class_is_over_the_limit():
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            lines = node.end_lineno - node.lineno + 1
            name = f"{_name(path)}::{node.name}"
            if lines > CLASS_LINES and name not in LONG_CLASSES:
                offenders.append(f"{name}: {lines} lines")
    assert not offenders, f"classes over {CLASS_LINES} lines (split them): {offenders}"


@pytest.mark.parametrize("name", [*LONG_MODULES, *LONG_CLASSES])
def test_the_allowlist_names_only_what_is_long(name):
    """An entry that no longer needs its exception goes, so the list stays the truth."""
    path, _, class_name = name.partition("::")
    source = PACKAGE.parent / path
    assert source.is_file(), f"{path} is gone: drop it from the allowlist"
    if not class_name:
        assert _lines(source) > MODULE_LINES, f"{path} fits now: drop it from the allowlist"
        return
    classes = [
        node
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef) and node.name == class_name
    ]
    assert classes, f"{name} is gone: drop it from the allowlist"
    assert any(node.end_lineno - node.lineno + 1 > CLASS_LINES for node in classes), (
        f"{name} fits now: drop it from the allowlist"
    )


def test_test_support_lives_in_aicli_testing_only():
    """Product packages hold no test helpers: they would ship, and product code could
    start to lean on them (import-linter forbids the imports, this the modules)."""
    strays = [
        _name(path)
        for path in _modules()
        if (path.stem in {"testing", "fakes", "fixtures"} or path.stem.startswith("fake_"))
        and "testing" not in path.relative_to(PACKAGE).parts[:1]
    ]
    assert not strays, f"test support outside aicli.testing: {strays}"
