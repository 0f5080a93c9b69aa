"""The local merge: a real git merge of exactly one commit that never loses or mixes in anyone's work."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from corral.delivery.gitmerge import is_merged, merge_at, protected_changes
from corral.errors import MergeRefused
from corral.paths import Protection

GIT = ["-c", "user.name=t", "-c", "user.email=t@t"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *GIT, *args], check=True, capture_output=True, text=True
    ).stdout


def rev(repo: Path, name: str) -> str:
    return git(repo, "rev-parse", name).strip()


def make(tmp_path: Path) -> tuple[Path, str]:
    """A repo with `main` and a run branch that changes app.txt; returns (repo, run head)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "app.txt").write_text("v1\n")
    (repo / "other.txt").write_text("o\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    git(repo, "checkout", "-q", "-b", "corral/r1")
    (repo / "app.txt").write_text("v2\n")
    git(repo, "commit", "-qam", "run change")
    head = rev(repo, "HEAD")
    git(repo, "checkout", "-q", "main")
    return repo, head


MESSAGE = "Merge run r1\n\nApproved-by: ann@example.com\nCorral-Run: r1\n"


def test_a_checked_out_clean_base_gets_a_merge_commit_and_its_working_tree(tmp_path: Path) -> None:
    repo, head = make(tmp_path)
    old = rev(repo, "main")
    result = merge_at(repo, "main", head, message=MESSAGE, approver="ann@example.com")
    assert rev(repo, "main") == result.commit and result.previous == old and result.checkout == repo
    assert git(repo, "rev-parse", "main^1", "main^2").split() == [old, head]
    assert "Approved-by: ann@example.com" in git(repo, "log", "-1", "--format=%B", "main")
    assert git(repo, "log", "-1", "--format=%an <%ae>", "main").strip() == "ann@example.com <ann@example.com>"
    assert (repo / "app.txt").read_text() == "v2\n"
    assert git(repo, "status", "--porcelain") == ""  # index and working tree agree with the new head
    assert is_merged(repo, "main", head)


def test_a_base_that_is_not_checked_out_has_only_its_ref_moved(tmp_path: Path) -> None:
    repo, head = make(tmp_path)
    git(repo, "checkout", "-q", "-b", "elsewhere")
    (repo / "other.txt").write_text("my work in progress\n")
    result = merge_at(repo, "main", head, message=MESSAGE, approver="ann")
    assert result.checkout is None and rev(repo, "main") == result.commit
    assert rev(repo, "HEAD") != result.commit and (repo / "app.txt").read_text() == "v1\n"
    assert (repo / "other.txt").read_text() == "my work in progress\n"


def test_a_checked_out_base_with_changes_is_refused_and_nothing_moves(tmp_path: Path) -> None:
    repo, head = make(tmp_path)
    old = rev(repo, "main")
    (repo / "other.txt").write_text("uncommitted\n")
    with pytest.raises(MergeRefused, match="uncommitted changes") as err:
        merge_at(repo, "main", head, message=MESSAGE, approver="ann")
    assert "stash" in str(err.value.hint)
    assert rev(repo, "main") == old and (repo / "other.txt").read_text() == "uncommitted\n"
    assert not is_merged(repo, "main", head)


def test_an_untracked_file_in_the_way_is_refused_before_the_ref_moves(tmp_path: Path) -> None:
    repo, _ = make(tmp_path)
    git(repo, "checkout", "-q", "corral/r1")
    (repo / "new.txt").write_text("from the run\n")
    git(repo, "add", "new.txt")
    git(repo, "commit", "-qm", "adds new.txt")
    head = rev(repo, "HEAD")
    git(repo, "checkout", "-q", "main")
    (repo / "new.txt").write_text("the user's own untracked file\n")
    old = rev(repo, "main")
    with pytest.raises(MergeRefused, match="overwrite"):
        merge_at(repo, "main", head, message=MESSAGE, approver="ann")
    assert rev(repo, "main") == old and (repo / "new.txt").read_text() == "the user's own untracked file\n"


def test_a_conflict_is_a_clear_error_naming_the_paths_and_nothing_moves(tmp_path: Path) -> None:
    repo, head = make(tmp_path)
    (repo / "app.txt").write_text("v1 changed on main\n")
    git(repo, "commit", "-qam", "main moves on")
    old = rev(repo, "main")
    with pytest.raises(MergeRefused, match="conflicts") as err:
        merge_at(repo, "main", head, message=MESSAGE, approver="ann")
    assert err.value.conflicts == ["app.txt"]
    assert rev(repo, "main") == old and git(repo, "status", "--porcelain") == ""


def test_repository_hooks_do_not_run_on_the_host(tmp_path: Path) -> None:
    repo, head = make(tmp_path)
    marker = tmp_path / "hook-ran"
    for name in ("post-merge", "post-checkout", "reference-transaction", "post-commit"):
        hook = repo / ".git" / "hooks" / name
        hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
        hook.chmod(0o755)
    merge_at(repo, "main", head, message=MESSAGE, approver="ann")
    assert not marker.exists()


def _branch_with(repo: Path, edit: str) -> str:
    git(repo, "checkout", "-q", "-B", "corral/r2", "main")
    subprocess.run(["sh", "-c", edit], cwd=repo, check=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "change")
    head = rev(repo, "HEAD")
    git(repo, "checkout", "-q", "main")
    return head


def test_protected_changes_see_renames_into_and_links_into_protected_paths(tmp_path: Path) -> None:
    repo, _ = make(tmp_path)
    os.makedirs(repo / "secrets")
    (repo / "secrets" / "key").write_text("k\n")
    (repo / "billing").mkdir()
    (repo / "billing" / "rates.txt").write_text("1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "protected files")
    base = rev(repo, "main")
    protection = Protection.of(readonly=["billing/**"], hidden=["secrets/**"])

    def found(edit: str) -> list[str]:
        return protected_changes(repo, base, _branch_with(repo, edit), protection, "/workspace")

    assert found("echo 2 > billing/rates.txt") == ["billing/rates.txt"]
    assert found("git mv other.txt billing/other.txt") == ["billing/other.txt"]
    assert found("git mv secrets/key leaked.txt") == ["secrets/key"]
    assert found("ln -s secrets/key peek") == ["peek -> secrets/key"]
    assert found("ln -s /workspace/billing/rates.txt peek") == ["peek -> billing/rates.txt"]
    assert found("ln -s ../../etc/passwd peek") == ["peek -> ../../etc/passwd (outside the repository)"]
    assert found("ln -s other.txt fine && echo 3 > app.txt") == []
