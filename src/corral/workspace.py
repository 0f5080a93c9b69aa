"""The run's workspace: a git worktree of the target repo at its base commit, on `corral/<run-id>`.

The user's own checkout and working tree are never modified; a dirty tree is reported, not included.
Everything the sandbox wrote is hostile input, so every host-side git command here names its git dir
explicitly, runs no hooks and no fsmonitor, and ignores the worktree's `.git` file (which the agent
could have rewritten if a mount ever failed).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from corral.errors import WorkspaceError

_SAFE_GIT = [
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "core.sshCommand=false",
    "-c", "protocol.allow=never",
    "-c", "commit.gpgSign=false",
    # The worktree belongs to the sandbox's uid, so git's ownership check would refuse it.
    "-c", "safe.directory=*",
]  # fmt: skip
_AUTHOR = {
    "GIT_AUTHOR_NAME": "corral agent",
    "GIT_AUTHOR_EMAIL": "agent@corral.invalid",
    "GIT_COMMITTER_NAME": "corral",
    "GIT_COMMITTER_EMAIL": "corral@corral.invalid",
}


def _git(args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    base_env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}
    proc = subprocess.run(
        ["git", *_SAFE_GIT, *args],
        cwd=cwd,
        env={**base_env, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise WorkspaceError(f"git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


@dataclass(frozen=True)
class RepoInfo:
    root: Path
    base_branch: str
    base_commit: str
    dirty_paths: tuple[str, ...]


@dataclass(frozen=True)
class Workspace:
    repo: Path
    path: Path
    branch: str
    base_commit: str
    git_dir: Path
    """The worktree's private git dir inside the repo's .git (`.git/worktrees/<name>`)."""

    def git(self, args: list[str], env: dict[str, str] | None = None) -> str:
        return _git(
            ["--git-dir", str(self.git_dir), "--work-tree", str(self.path), *args], cwd=self.path, env=env
        )


@dataclass(frozen=True)
class CommitInfo:
    commit: str
    files: tuple[str, ...]
    diff_stat: str


def inspect_repo(repo: Path, base_branch: str) -> RepoInfo:
    """Check that `repo` is a git repo with `base_branch`, and report its dirty paths."""
    repo = repo.expanduser()
    if not repo.is_dir():
        raise WorkspaceError(
            f"{repo}: no such directory", hint="pass --repo with the path of a git repository"
        )
    try:
        top = Path(_git(["rev-parse", "--show-toplevel"], cwd=repo).strip())
    except WorkspaceError:
        raise WorkspaceError(
            f"{repo}: not a git repository",
            hint="run corral inside a git checkout, or `git init` and commit first",
        ) from None
    try:
        commit = _git(
            ["rev-parse", "--verify", "--quiet", f"refs/heads/{base_branch}^{{commit}}"], cwd=top
        ).strip()
    except WorkspaceError:
        branches = _git(["for-each-ref", "--format=%(refname:short)", "refs/heads"], cwd=top).split()
        raise WorkspaceError(
            f"{top}: base branch '{base_branch}' does not exist (branches: {', '.join(branches) or 'none'})",
            hint="set [project].base_branch in corral.toml to an existing branch",
        ) from None
    status = _git(["status", "--porcelain", "--untracked-files=normal"], cwd=top)
    dirty = tuple(line[3:] for line in status.splitlines() if line.strip())
    return RepoInfo(root=top, base_branch=base_branch, base_commit=commit, dirty_paths=dirty)


def commit_exists(repo: Path, commit: str) -> bool:
    """Whether `commit` names a commit object in `repo` (a recorded base may have been rewritten away)."""
    try:
        _git(["cat-file", "-e", f"{commit}^{{commit}}"], cwd=repo)
    except WorkspaceError:
        return False
    return True


def tree_of(repo: Path, commit: str) -> str | None:
    """The tree a commit records (two commits with equal trees have identical contents), or None."""
    try:
        return _git(["rev-parse", "--verify", "--quiet", f"{commit}^{{tree}}"], cwd=repo).strip() or None
    except WorkspaceError:
        return None


_WORKTREES = threading.Lock()
"""Concurrent runs of one repository (a regression suite) must not race on its worktree metadata."""


def create_worktree(info: RepoInfo, run_id: str, worktrees_dir: Path) -> Workspace:
    path = worktrees_dir / run_id
    branch = f"corral/{run_id}"
    worktrees_dir.mkdir(parents=True, exist_ok=True)
    with _WORKTREES:
        _git(["worktree", "add", "--quiet", "-b", branch, str(path), info.base_commit], cwd=info.root)
    git_dir = Path(_git(["rev-parse", "--absolute-git-dir"], cwd=path).strip())
    return Workspace(repo=info.root, path=path, branch=branch, base_commit=info.base_commit, git_dir=git_dir)


def hand_over(ws: Workspace, uid: int) -> None:
    """Give the worktree's files to the sandbox user, so the agent can edit them as a non-root uid.

    The `.git` file stays ours: it is mounted read-only and the host's git never trusts it anyway.
    """
    for root, dirs, files in os.walk(ws.path):
        for name in dirs + files:
            path = os.path.join(root, name)
            if path != str(ws.path / ".git"):
                os.lchown(path, uid, uid)
    os.chown(ws.path, uid, uid)


def remove_worktree(repo: Path, path: Path) -> None:
    """Remove the worktree directory and its registration; the run branch and its commit stay."""
    if repo.is_dir():
        with _WORKTREES, contextlib.suppress(WorkspaceError):
            _git(["worktree", "remove", "--force", "--force", str(path)], cwd=repo)
    if path.exists():
        # A worktree the agent filled with unreadable files is still ours to delete.
        shutil.rmtree(path, ignore_errors=True)
    if repo.is_dir():
        with _WORKTREES, contextlib.suppress(WorkspaceError):
            _git(["worktree", "prune"], cwd=repo)


def matches_any(path: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """Whether a workspace-relative path falls under any of the corral.toml path globs."""
    path = path[2:] if path.startswith("./") else path
    for pattern in patterns:
        if fnmatch.fnmatch(path, pattern):
            return True
        if pattern.endswith("/**") and (path == pattern[:-3] or path.startswith(pattern[:-2])):
            return True
        if path == pattern or path.startswith(pattern.rstrip("/") + "/"):
            return True
    return False


def commit_changes(ws: Workspace, message: str, protected: tuple[str, ...]) -> CommitInfo | None:
    """Commit everything the agent changed on the run branch, or None when nothing changed.

    A change under a read-only or hidden path is refused, whatever the mounts allowed.
    """
    ws.git(["add", "--all"])
    names = ws.git(["diff", "--cached", "--name-only", "-z"]).split("\0")
    files = tuple(name for name in names if name)
    if not files:
        return None
    touched = [name for name in files if matches_any(name, protected)]
    if touched:
        ws.git(["reset", "--quiet"])
        raise WorkspaceError(
            f"the agent's change touches protected paths: {', '.join(touched)}",
            hint="read-only and hidden paths in corral.toml can never be changed by a run",
        )
    stat = ws.git(["diff", "--cached", "--stat"]).strip()
    ws.git(["commit", "--quiet", "--no-verify", "-m", message], env=_AUTHOR)
    commit = ws.git(["rev-parse", "HEAD"]).strip()
    return CommitInfo(commit=commit, files=files, diff_stat=stat)


def branch_diff_stat(repo: Path, base_commit: str, branch: str) -> str:
    try:
        return _git(["diff", "--stat", f"{base_commit}..refs/heads/{branch}"], cwd=repo).strip()
    except WorkspaceError:
        return ""


def delete_branch(repo: Path, branch: str) -> None:
    with contextlib.suppress(WorkspaceError):
        _git(["branch", "-D", branch], cwd=repo)
