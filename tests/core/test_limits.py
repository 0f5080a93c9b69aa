"""corral/limits.py: the `[limits]` bounds on a run's change (issue 9). Each refusal names the bound, its
value and the file; a change exactly at a bound is within it. The git-reading halves are fed the real
output of git on a real repository. tests/core/test_workspace.py plays the same bounds through
`commit_changes`."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from corral import limits
from corral.config import LimitsConfig
from corral.errors import LimitError, WorkspaceError
from tests.core.test_workspace import git

MB = 1024 * 1024
SMALL = LimitsConfig(max_file_mb=1, max_diff_mb=1.5, max_files=3)


def refused(
    sizes: dict[str, int], count: int, bounds: LimitsConfig = SMALL, when: str = "changes"
) -> LimitError:
    with pytest.raises(LimitError) as info:
        limits.check(sizes, count, bounds, when)
    return info.value


def test_a_change_within_every_bound_passes() -> None:
    limits.check({}, 0, SMALL, "changes")
    limits.check({"a": 10, "b": 20}, 3, SMALL, "changes")
    # Exactly at each bound: three files, one of exactly 1 MB, 1.5 MB in all.
    limits.check({"a": MB, "b": MB // 2, "c": 0}, 3, SMALL, "would commit")
    assert limits.MB == MB


def test_one_file_more_than_max_files_is_refused_and_names_some_of_them() -> None:
    error = refused({"d": 1, "a": 1, "c": 1, "b": 1}, 4)
    assert error.message == "the run changes 4 files, over [limits] max_files = 3 (e.g. a, b, c)"
    assert error.hint == "raise [limits] max_files in corral.toml if a change this wide is intended"
    assert isinstance(error, WorkspaceError)


def test_deletions_count_towards_max_files() -> None:
    # Deleted paths have no size: four of them still go over three files.
    error = refused({}, 4, when="would commit")
    assert error.message == "the run would commit 4 files, over [limits] max_files = 3 (e.g. deletions only)"
    error = refused({"new.txt": 5}, 4)
    assert error.message.endswith("(e.g. new.txt)")


def test_a_file_one_byte_over_max_file_mb_is_refused_by_name() -> None:
    error = refused({"ok.txt": 5, "big.bin": MB + 1}, 2)
    assert error.message == "big.bin is 1.0 MB, over [limits] max_file_mb = 1"
    assert error.hint == (
        "keep large files out of the run's change, or raise [limits] max_file_mb in corral.toml"
    )


def test_the_first_file_over_the_bound_by_name_is_the_one_named() -> None:
    error = refused({"z.bin": 3 * MB, "b.bin": 2 * MB}, 2, LimitsConfig(max_file_mb=0.5, max_diff_mb=100))
    assert error.message == "b.bin is 2.0 MB, over [limits] max_file_mb = 0.5"


def test_a_total_one_byte_over_max_diff_mb_is_refused_and_names_the_largest_file() -> None:
    sizes = {"a.bin": MB // 2, "b.bin": MB // 2 + 1, "c.bin": MB // 2}
    error = refused(sizes, 3, when="would commit")
    assert error.message == (
        "the run would commit 1.5 MB of files, over [limits] max_diff_mb = 1.5 (largest: b.bin, 0.5 MB)"
    )
    assert error.hint == "raise [limits] max_diff_mb in corral.toml if a change this large is intended"


def test_sizes_are_shown_in_megabytes_with_one_decimal() -> None:
    bounds = LimitsConfig(max_file_mb=10, max_diff_mb=100, max_files=5000)
    assert refused({"big.bin": 11 * MB + MB // 3}, 1, bounds).message == (
        "big.bin is 11.3 MB, over [limits] max_file_mb = 10"
    )
    bounds = LimitsConfig(max_file_mb=100, max_diff_mb=2.25, max_files=5000)
    assert refused({"a": 2 * MB, "b": 3 * MB}, 2, bounds).message == (
        "the run changes 5.0 MB of files, over [limits] max_diff_mb = 2.25 (largest: b, 3.0 MB)"
    )


def test_the_file_count_is_checked_first_then_one_file_then_the_total() -> None:
    # Over all three bounds: the count is reported.
    assert "max_files" in refused({"a": 2 * MB, "b": 2 * MB}, 4).message
    # Over the file and the total bounds: the file is reported.
    assert "max_file_mb" in refused({"a": 2 * MB, "b": 2 * MB}, 2).message


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    files = {"kept.txt": "unchanged\n", "edited.txt": "old\n", "gone.txt": "to be deleted\n"}
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for name, text in files.items():
        (root / name).write_text(text)
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return root


def change(root: Path) -> None:
    """Edit, delete, add (a one-letter name too, and one in a new directory) and link."""
    (root / "edited.txt").write_text("new content\n")
    (root / "gone.txt").unlink()
    (root / "x").write_bytes(b"1234567")
    (root / "dir").mkdir()
    (root / "dir" / "deep file.bin").write_bytes(b"\0" * 300)
    os.symlink("/etc/passwd", root / "link")


def status(root: Path) -> str:
    return git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames")


def test_worktree_sizes_are_the_changed_regular_files_on_disk(repo: Path) -> None:
    change(repo)
    sizes, count = limits.worktree_sizes(repo, status(repo))
    # The deletion and the link count as changed paths but add no bytes; the unchanged file is absent.
    assert sizes == {"edited.txt": 12, "x": 7, "dir/deep file.bin": 300}
    assert count == 5


def test_a_worktree_with_no_change_has_nothing_to_count(repo: Path) -> None:
    assert limits.worktree_sizes(repo, status(repo)) == ({}, 0)
    assert limits.worktree_sizes(repo, "") == ({}, 0)


def test_a_sparse_file_counts_its_size_without_being_read(repo: Path) -> None:
    with (repo / "huge.bin").open("wb") as out:
        out.truncate(64 * 1024 * MB)  # 64 GiB, sparse: reading it would never end in a test
    sizes, count = limits.worktree_sizes(repo, status(repo))
    assert (sizes, count) == ({"huge.bin": 64 * 1024 * MB}, 1)
    assert re.fullmatch(r"huge\.bin is 65536\.0 MB, .*", refused(sizes, count).message)


def test_staged_blobs_are_the_new_contents_the_commit_would_hold(repo: Path) -> None:
    change(repo)
    inner = repo / "vendored"
    inner.mkdir()
    git(inner, "init", "-q")
    (inner / "f").write_text("f")
    git(inner, "add", "f")
    git(inner, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "inner")
    git(repo, "add", "--all")
    raw = git(repo, "diff", "--cached", "--no-renames", "--raw", "-z", "--abbrev=40")
    blobs = limits.staged_blobs(raw)
    # The deletion has no blob, and the embedded repository is a commit elsewhere: neither is listed.
    assert set(blobs) == {"edited.txt", "x", "dir/deep file.bin", "link"}
    for path, sha in blobs.items():
        assert sha == git(repo, "rev-parse", f":{path}").strip()
    assert limits.staged_blobs("") == {}
