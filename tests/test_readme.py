"""The README stays true: its settings table is aicli/settings.py, and CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

from aicli.cli import SECRET_SETTINGS
from aicli.settings import setting_fields

README = Path(__file__).resolve().parents[1] / "README.md"


def expected_rows() -> list[str]:
    rows = []
    for name, default, help_text in setting_fields():
        flag = (
            "(none: keeps it out of `ps`)"
            if name in SECRET_SETTINGS
            else f"`--{name.replace('_', '-')}`"
        )
        shown = "—" if default is None else default
        rows.append(f"| {flag} | `AICLI_{name.upper()}` | {shown} | {help_text} |")
    return rows


def test_the_settings_table_matches_the_settings():
    text = README.read_text()
    block = re.search(r"<!-- settings-table.*?-->\n(.*?)<!-- /settings-table -->", text, re.S)
    assert block, "README lost its settings table markers"
    rows = block.group(1).strip().splitlines()[2:]
    assert rows == expected_rows()


def test_the_readme_names_the_two_commands_and_ci_runs_the_test_one():
    text = README.read_text()
    assert "make run" in text and "make test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert ci.strip().splitlines()[-1] == "make test"


def test_the_readme_links_only_to_files_in_the_repository():
    root = README.parent
    for target in re.findall(r"\]\(([^)#]+)\)", README.read_text()):
        if "://" in target:
            continue
        path = (root / target).resolve()
        assert path.is_relative_to(root) and path.exists(), target
