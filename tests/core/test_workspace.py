import base64
import re
import subprocess
from pathlib import Path

import pytest

from corral.audit.redact import Redactor
from corral.config import LimitsConfig
from corral.errors import LimitError, WorkspaceError
from corral.paths import Protection
from corral.workspace import (
    Workspace,
    commit_changes,
    create_worktree,
    inspect_repo,
    protected_in_commit,
    remove_worktree,
)

NONE = Protection.of()


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
    (root / "config").mkdir()
    (root / "config" / "secret.env").write_text("TOKEN=s3cret\n")
    (root / "config" / "app.toml").write_text("debug = false\n")
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
    commit = commit_changes(ws, "corral: change", NONE)
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
    assert commit_changes(ws, "nothing", NONE) is None
    remove_worktree(repo, ws.path)


def test_a_change_to_a_protected_path_is_refused(repo: Path, tmp_path: Path) -> None:
    ws = create_worktree(inspect_repo(repo, "main"), "r4", tmp_path / "wt")
    (ws.path / "billing" / "rates.py").write_text("RATE = 0\n")
    with pytest.raises(WorkspaceError, match=re.escape("billing/rates.py")):
        commit_changes(ws, "sneaky", Protection.of(["billing/**"]))
    assert git(repo, "rev-parse", "corral/r4").strip() == ws.base_commit
    remove_worktree(repo, ws.path)


def test_host_git_ignores_a_rewritten_dot_git_file(repo: Path, tmp_path: Path) -> None:
    ws = create_worktree(inspect_repo(repo, "main"), "r5", tmp_path / "wt")
    evil = tmp_path / "evil"
    evil.mkdir()
    (ws.path / ".git").write_text(f"gitdir: {evil}\n")
    (ws.path / "app.py").write_text("x = 5\n")
    commit = commit_changes(ws, "still ours", NONE)
    assert commit is not None
    assert git(repo, "show", "corral/r5:app.py") == "x = 5\n"
    remove_worktree(repo, ws.path)


def _refused(ws: Workspace, protection: Protection, *paths: str) -> None:
    with pytest.raises(WorkspaceError) as info:
        commit_changes(ws, "sneaky", protection)
    for path in paths:
        assert path in info.value.message
    assert git(ws.repo, "rev-parse", ws.branch).strip() == ws.base_commit
    assert git(ws.repo, "--git-dir", str(ws.git_dir), "diff", "--cached", "--name-only").strip() == ""


def test_moving_the_directory_above_a_hidden_file_is_refused_by_its_old_side(
    repo: Path, tmp_path: Path
) -> None:
    """With rename detection git reports only `{config => moved}/secret.env`, the new side."""
    ws = create_worktree(inspect_repo(repo, "main"), "r6", tmp_path / "wt")
    (ws.path / "config").rename(ws.path / "moved")
    _refused(ws, Protection.of(hidden=["config/secret.env"]), "config/secret.env")
    remove_worktree(repo, ws.path)


def test_renaming_a_file_onto_a_protected_path_is_refused(repo: Path, tmp_path: Path) -> None:
    ws = create_worktree(inspect_repo(repo, "main"), "r7", tmp_path / "wt")
    (ws.path / "billing" / "rates.py").unlink()
    (ws.path / "app.py").rename(ws.path / "billing" / "rates.py")
    _refused(ws, Protection.of(readonly=["billing/rates.py"]), "billing/rates.py")
    remove_worktree(repo, ws.path)


def test_deleting_a_readonly_file_or_adding_a_hidden_one_is_refused(repo: Path, tmp_path: Path) -> None:
    ws = create_worktree(inspect_repo(repo, "main"), "r8", tmp_path / "wt")
    (ws.path / "billing" / "rates.py").unlink()
    _refused(ws, Protection.of(readonly=["billing/**"]), "billing/rates.py")
    (ws.path / "billing" / "rates.py").write_text("RATE = 3\n")
    (ws.path / "deep" / "er").mkdir(parents=True)
    (ws.path / "deep" / "er" / "new.pem").write_text("key")
    _refused(ws, Protection.of(hidden=["*.pem"]), "deep/er/new.pem")
    remove_worktree(repo, ws.path)


def test_an_unprotected_rename_still_commits_both_sides(repo: Path, tmp_path: Path) -> None:
    ws = create_worktree(inspect_repo(repo, "main"), "r9", tmp_path / "wt")
    (ws.path / "app.py").rename(ws.path / "main.py")
    commit = commit_changes(ws, "rename", Protection.of(hidden=["config/secret.env"]))
    assert commit is not None and set(commit.files) == {"app.py", "main.py"}
    remove_worktree(repo, ws.path)


def test_protected_paths_of_the_base_commit_are_outermost_per_kind(repo: Path, tmp_path: Path) -> None:
    ws = create_worktree(inspect_repo(repo, "main"), "r10", tmp_path / "wt")
    protection = Protection.of(readonly=["config/**", "billing/rates.py"], hidden=["*.env"])
    assert protected_in_commit(ws, protection) == ("billing/rates.py", "config", "config/secret.env")
    assert protected_in_commit(ws, Protection.of(hidden=["nothing/**"])) == ()
    remove_worktree(repo, ws.path)


SMALL = LimitsConfig(max_file_mb=1, max_diff_mb=1.5, max_files=3)
MB = 1024 * 1024


def test_a_file_over_max_file_mb_is_named_and_never_reaches_the_repository(
    repo: Path, tmp_path: Path
) -> None:
    ws = create_worktree(inspect_repo(repo, "main"), "r11", tmp_path / "wt")
    with (ws.path / "big.bin").open("wb") as out:
        out.truncate(MB + 1)  # sparse: the check must not read it
    objects_before = git(repo, "count-objects", "-v")
    with pytest.raises(LimitError) as info:
        commit_changes(ws, "big", NONE, SMALL)
    assert "big.bin" in info.value.message and "max_file_mb = 1" in info.value.message
    assert git(repo, "rev-parse", ws.branch).strip() == ws.base_commit
    assert git(repo, "count-objects", "-v") == objects_before  # not even a loose blob was written
    remove_worktree(repo, ws.path)


def test_a_file_exactly_at_the_limit_is_committed(repo: Path, tmp_path: Path) -> None:
    ws = create_worktree(inspect_repo(repo, "main"), "r12", tmp_path / "wt")
    (ws.path / "edge.bin").write_bytes(b"x" * MB)
    commit = commit_changes(ws, "edge", NONE, SMALL)
    assert commit is not None and commit.files == ("edge.bin",)
    remove_worktree(repo, ws.path)


def test_a_diff_over_max_diff_mb_is_refused(repo: Path, tmp_path: Path) -> None:
    ws = create_worktree(inspect_repo(repo, "main"), "r13", tmp_path / "wt")
    (ws.path / "a.bin").write_bytes(b"a" * (MB - 10))
    (ws.path / "app.py").write_bytes(b"b" * (MB - 20))
    with pytest.raises(LimitError, match=re.escape("max_diff_mb = 1.5 (largest: a.bin")):
        commit_changes(ws, "wide", NONE, SMALL)
    assert git(repo, "rev-parse", ws.branch).strip() == ws.base_commit
    remove_worktree(repo, ws.path)


def test_too_many_files_are_refused_deletions_included(repo: Path, tmp_path: Path) -> None:
    ws = create_worktree(inspect_repo(repo, "main"), "r14", tmp_path / "wt")
    (ws.path / "app.py").unlink()
    (ws.path / "billing" / "rates.py").unlink()
    (ws.path / "config" / "app.toml").unlink()
    (ws.path / "n.txt").write_text("n")
    with pytest.raises(LimitError, match=re.escape("4 files, over [limits] max_files = 3")):
        commit_changes(ws, "many", NONE, SMALL)
    (ws.path / "n.txt").unlink()
    commit = commit_changes(ws, "three", NONE, SMALL)
    assert commit is not None and len(commit.files) == 3
    remove_worktree(repo, ws.path)


def test_a_file_that_grows_after_the_disk_check_is_still_refused(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index check is the last word: a writer still running after the disk check cannot slip past."""
    import corral.workspace as workspace

    ws = create_worktree(inspect_repo(repo, "main"), "r15", tmp_path / "wt")
    (ws.path / "grow.bin").write_bytes(b"g")
    real = workspace._check_worktree_limits

    def then_grow(w: workspace.Workspace, limits: LimitsConfig) -> None:
        real(w, limits)
        (ws.path / "grow.bin").write_bytes(b"g" * (MB + 1))

    monkeypatch.setattr(workspace, "_check_worktree_limits", then_grow)
    with pytest.raises(LimitError, match=re.escape("grow.bin is 1.0 MB, over [limits] max_file_mb = 1")):
        commit_changes(ws, "grow", NONE, SMALL)
    assert git(repo, "rev-parse", ws.branch).strip() == ws.base_commit
    remove_worktree(repo, ws.path)


def test_an_embedded_repository_is_counted_without_breaking_the_size_check(
    repo: Path, tmp_path: Path
) -> None:
    ws = create_worktree(inspect_repo(repo, "main"), "r16", tmp_path / "wt")
    inner = ws.path / "vendored"
    inner.mkdir()
    git(inner, "init", "-q")
    (inner / "f").write_text("f")
    git(inner, "add", "f")
    git(inner, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "inner")
    commit = commit_changes(ws, "gitlink", NONE, SMALL)
    assert commit is not None and commit.files == ("vendored",)
    remove_worktree(repo, ws.path)


LEAKED = "tok>>>???~~~/+w9"  # its base64 holds '+', '/' and '='


def _redactor() -> Redactor:
    redactor = Redactor()
    redactor.register("DEPLOY_TOKEN", LEAKED)
    return redactor


def test_a_change_that_adds_a_secret_is_refused_and_nothing_is_committed(repo: Path, tmp_path: Path) -> None:
    ws = create_worktree(inspect_repo(repo, "main"), "r9", tmp_path / "wt")
    (ws.path / "app.py").write_text(f"x = 1\nTOKEN = {LEAKED!r}\n")
    (ws.path / "blob.bin").write_bytes(b"\x00\xff" + base64.b64encode(b"x" + LEAKED.encode()) + b"\x00")
    (ws.path / "fine.txt").write_text("nothing here\n")
    with pytest.raises(WorkspaceError) as refused:
        commit_changes(ws, "leak", NONE, find_secrets=_redactor().names_in)
    assert "secret DEPLOY_TOKEN" in refused.value.message
    assert "app.py" in refused.value.message and "blob.bin" in refused.value.message
    assert "fine.txt" not in refused.value.message and LEAKED not in refused.value.message
    assert git(repo, "rev-parse", "corral/r9").strip() == ws.base_commit
    assert git(ws.path, "diff", "--cached", "--name-only") == ""  # unstaged again: the change stays
    assert (ws.path / "app.py").read_text().endswith(f"{LEAKED!r}\n")
    remove_worktree(repo, ws.path)


def test_removing_a_secret_or_changing_other_lines_of_its_file_still_commits(
    repo: Path, tmp_path: Path
) -> None:
    git(repo, "config", "user.name", "t")
    git(repo, "config", "user.email", "t@t")
    (repo / "config" / "app.toml").write_text(f"debug = false\ntoken = '{LEAKED}'\n")
    git(repo, "commit", "-qam", "a token in the repository already")
    ws = create_worktree(inspect_repo(repo, "main"), "r10", tmp_path / "wt")
    (ws.path / "config" / "app.toml").write_text(f"debug = true\ntoken = '{LEAKED}'\n")
    commit = commit_changes(ws, "other line", NONE, find_secrets=_redactor().names_in)
    assert commit is not None and commit.files == ("config/app.toml",)
    (ws.path / "config" / "app.toml").write_text("debug = true\n")
    assert commit_changes(ws, "removed", NONE, find_secrets=_redactor().names_in) is not None
    remove_worktree(repo, ws.path)


def test_without_secrets_to_find_a_change_commits_as_before(repo: Path, tmp_path: Path) -> None:
    ws = create_worktree(inspect_repo(repo, "main"), "r11", tmp_path / "wt")
    (ws.path / "app.py").write_text(f"TOKEN = {LEAKED!r}\n")
    assert commit_changes(ws, "no secrets registered", NONE, find_secrets=Redactor().names_in) is not None
    remove_worktree(repo, ws.path)


def test_a_secret_after_a_lone_carriage_return_on_an_added_line_is_still_found(
    repo: Path, tmp_path: Path
) -> None:
    ws = create_worktree(inspect_repo(repo, "main"), "r12", tmp_path / "wt")
    (ws.path / "app.py").write_bytes(f"x = 1\rTOKEN = {LEAKED!r}\n".encode())
    with pytest.raises(WorkspaceError, match="secret DEPLOY_TOKEN"):
        commit_changes(ws, "hidden behind a CR", NONE, find_secrets=_redactor().names_in)
    remove_worktree(repo, ws.path)
