"""Attacks on the sandbox's edges: what a tenant leaves inside its session for aicli,
which works outside the sandbox, to follow.

The session's directory (its Claude config directory with the transcripts) is
writable inside the sandbox, and a link made there may point anywhere. aicli reads
a turn's transcript out of it into the database and writes the stored one back before
a resume; neither may follow a tenant's link out of the session's directory.
"""

from __future__ import annotations

import os

import pytest

from aicli.actors.transcript_files import read_new, restore

SECRET = b"OUTSIDE-SECRET\n"


@pytest.fixture
def session(tmp_path):
    """A session's directory with its config dir, and a secret file and directory outside."""
    root = tmp_path / "sessions" / "s1"
    project = root / "claude" / "projects" / "-w"
    project.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.key").write_bytes(SECRET)
    return root, project, outside


def test_a_transcript_linked_elsewhere_is_not_read(session):
    root, project, outside = session
    (project / "t.jsonl").symlink_to(outside / "secret.key")
    with pytest.raises(OSError):
        read_new(project / "t.jsonl", 0, root)


@pytest.mark.parametrize("linked", ["project", "config"])
def test_a_directory_linked_elsewhere_is_not_read_through(session, linked):
    root, project, outside = session
    swapped = project if linked == "project" else root / "claude"
    os.rename(swapped, swapped.with_name("moved"))
    swapped.symlink_to(outside)
    path = (outside if linked == "project" else outside / "projects" / "-w") / "t.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(SECRET)
    with pytest.raises(OSError):
        read_new(project / "t.jsonl", 0, root)


def test_a_restore_never_writes_through_a_linked_directory(session):
    root, project, outside = session
    os.rename(project, project.with_name("moved"))
    project.symlink_to(outside)
    with pytest.raises(OSError):
        restore(project / "t.jsonl", b"stored\n", root)
    assert sorted(os.listdir(outside)) == ["secret.key"]


def test_a_restore_replaces_a_linked_transcript_and_leaves_its_target(session):
    root, project, outside = session
    (project / "t.jsonl").symlink_to(outside / "secret.key")
    assert restore(project / "t.jsonl", b"stored\n", root) is True
    assert not (project / "t.jsonl").is_symlink()
    assert (project / "t.jsonl").read_bytes() == b"stored\n"
    assert (outside / "secret.key").read_bytes() == SECRET


def test_a_path_outside_the_session_is_refused(session):
    root, _, outside = session
    with pytest.raises(ValueError):
        read_new(outside / "secret.key", 0, root)
