import re
import subprocess
from pathlib import Path

import pytest

from corral.errors import WorkspaceError
from corral.workspace import commit_changes, create_worktree, inspect_repo, remove_worktree


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "app.py").write_text("x = 1\n")
    (root / "billing").mkdir()
    (root / "billing" / "rates.py").write_text("RATE = 3\n")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return root


def test_not_a_git_repo_is_named(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError) as info:
        inspect_repo(tmp_path, "main")
    assert str(tmp_path) in info.value.message and "not a git repository" in info.value.message


def test_missing_base_branch_lists_the_branches(repo: Path) -> None:
    with pytest.raises(WorkspaceError) as info:
        inspect_repo(repo, "develop")
    assert "'develop' does not exist" in info.value.message and "main" in info.value.message


def test_dirty_tree_is_reported_and_not_included(repo: Path, tmp_path: Path) -> None:
    (repo / "app.py").write_text("x = 2\n")
    (repo / "scratch.txt").write_text("mine")
    info = inspect_repo(repo, "main")
    assert set(info.dirty_paths) == {"app.py", "scratch.txt"}
    ws = create_worktree(info, "r1", tmp_path / "wt")
    assert (ws.path / "app.py").read_text() == "x = 1\n"
    assert not (ws.path / "scratch.txt").exists()
    remove_worktree(repo, ws.path)


def test_run_commit_lands_on_the_run_branch_and_the_checkout_is_untouched(repo: Path, tmp_path: Path) -> None:
    info = inspect_repo(repo, "main")
    ws = create_worktree(info, "r2", tmp_path / "wt")
    (ws.path / "app.py").write_text("x = 3\n")
    commit = commit_changes(ws, "corral: change", ())
    assert commit is not None and commit.files == ("app.py",)
    assert git(repo, "show", "corral/r2:app.py") == "x = 3\n"
    assert git(repo, "rev-parse", "HEAD").strip() == info.base_commit
    assert (repo / "app.py").read_text() == "x = 1\n"
    remove_worktree(repo, ws.path)
    assert not ws.path.exists()
    assert "r2" not in git(repo, "worktree", "list")
    assert git(repo, "branch", "--list", "corral/r2").strip()


def test_no_change_means_no_commit(repo: Path, tmp_path: Path) -> None:
    ws = create_worktree(inspect_repo(repo, "main"), "r3", tmp_path / "wt")
    assert commit_changes(ws, "nothing", ()) is None
    remove_worktree(repo, ws.path)


def test_a_change_to_a_protected_path_is_refused(repo: Path, tmp_path: Path) -> None:
    ws = create_worktree(inspect_repo(repo, "main"), "r4", tmp_path / "wt")
    (ws.path / "billing" / "rates.py").write_text("RATE = 0\n")
    with pytest.raises(WorkspaceError, match=re.escape("billing/rates.py")):
        commit_changes(ws, "sneaky", ("billing/**",))
    assert git(repo, "rev-parse", "corral/r4").strip() == ws.base_commit
    remove_worktree(repo, ws.path)


def test_host_git_ignores_a_rewritten_dot_git_file(repo: Path, tmp_path: Path) -> None:
    ws = create_worktree(inspect_repo(repo, "main"), "r5", tmp_path / "wt")
    evil = tmp_path / "evil"
    evil.mkdir()
    (ws.path / ".git").write_text(f"gitdir: {evil}\n")
    (ws.path / "app.py").write_text("x = 5\n")
    commit = commit_changes(ws, "still ours", ())
    assert commit is not None
    assert git(repo, "show", "corral/r5:app.py") == "x = 5\n"
    remove_worktree(repo, ws.path)
