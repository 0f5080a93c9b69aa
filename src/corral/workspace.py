"""The run's workspace: a git worktree of the target repo at its base commit, on `corral/<run-id>`.

The user's own checkout and working tree are never modified; a dirty tree is reported, not included.
Everything the sandbox wrote is hostile input, so every host-side git command here names its git dir
explicitly, runs no hooks and no fsmonitor, and ignores the worktree's `.git` file (which the agent
could have rewritten if a mount ever failed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from corral import limits as limits_of
from corral.config import LimitsConfig
from corral.errors import WorkspaceError
from corral.paths import Protection, outermost

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


_GIT_ENV = {"PATH": "/usr/bin:/bin:/usr/local/bin", "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}


def run_git(
    args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Hardened git whose exit status the caller reads (a merge-tree conflict exits 1, for one)."""
    return subprocess.run(
        ["git", *_SAFE_GIT, *args],
        cwd=cwd,
        env={**_GIT_ENV, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


def _git(
    args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, stdin: str | None = None
) -> str:
    proc = run_git(args, cwd=cwd, env=env, stdin=stdin)
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

    def git(self, args: list[str], env: dict[str, str] | None = None, stdin: str | None = None) -> str:
        return _git(
            ["--git-dir", str(self.git_dir), "--work-tree", str(self.path), *args],
            cwd=self.path,
            env=env,
            stdin=stdin,
        )


@dataclass(frozen=True)
class CommitInfo:
    commit: str
    files: tuple[str, ...]
    diff_stat: str
    patch: str = ""
    """The full patch of the commit (text; binary files as `Binary files differ`)."""


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


def create_worktree(info: RepoInfo, run_id: str, worktrees_dir: Path, *, reopen: bool = False) -> Workspace:
    """A worktree on a new branch `corral/<run_id>` at the base commit, or with `reopen` on that
    branch as a previous session of the run left it (`corral shell --resume`)."""
    path = worktrees_dir / run_id
    branch = f"corral/{run_id}"
    worktrees_dir.mkdir(parents=True, exist_ok=True)
    with _WORKTREES:
        if reopen:
            _git(["worktree", "add", "--quiet", str(path), branch], cwd=info.root)
        else:
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


@dataclass(frozen=True)
class _Change:
    status: str
    path: str


def _staged_changes(ws: Workspace) -> list[_Change]:
    """Every path the index changes, a rename as its two sides: the deletion and the addition."""
    fields = ws.git(["diff", "--cached", "--no-renames", "--name-status", "-z"]).split("\0")
    return [_Change(status, path) for status, path in zip(fields[0::2], fields[1::2], strict=False) if path]


def _check_worktree_limits(ws: Workspace, limits: LimitsConfig) -> None:
    """The limits, from file sizes on disk, before `git add` copies anything into the repository."""
    status = ["status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames"]
    sizes, count = limits_of.worktree_sizes(ws.path, ws.git([*status, "--ignore-submodules=none"]))
    limits_of.check(sizes, count, limits, "changes")


def _check_staged_limits(ws: Workspace, changes: list[_Change], limits: LimitsConfig) -> None:
    """The limits again, from the sizes of the blobs the commit would hold: the last word."""
    wanted = limits_of.staged_blobs(
        ws.git(["diff", "--cached", "--no-renames", "--raw", "-z", "--abbrev=40"])
    )
    sizes: dict[str, int] = {}
    if wanted:
        answer = ws.git(["cat-file", "--batch-check=%(objectsize)"], stdin="\n".join(wanted.values()) + "\n")
        sizes = dict(zip(wanted, (int(line) for line in answer.split()), strict=True))
    limits_of.check(sizes, len(changes), limits, "would commit")


def secrets_added(ws: Workspace, find: Callable[[str], set[str]]) -> dict[str, set[str]]:
    """Per staged path, the secrets (by name) that `find` sees in the lines the change adds.

    Binary content is read as text too (`--text`, undecodable bytes replaced), so a value the agent
    wrote into any file is found in its raw form and in the encodings the redactor knows. Read as
    bytes, not through `run_git`'s text mode, which turns a lone CR into a line break and would hide
    what follows it on an added line."""
    proc = subprocess.run(
        [
            "git",
            *_SAFE_GIT,
            "--git-dir",
            str(ws.git_dir),
            "--work-tree",
            str(ws.path),
            "diff",
            "--cached",
            "--no-renames",
            "--no-ext-diff",
            "--no-textconv",
            "--text",
            "--unified=0",
            "--no-color",
        ],
        cwd=ws.path,
        env=_GIT_ENV,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise WorkspaceError(f"git diff --cached failed: {proc.stderr.decode(errors='replace').strip()}")
    found: dict[str, set[str]] = {}
    path = ""
    added: list[str] = []
    for line in [*proc.stdout.decode(errors="replace").split("\n"), "diff --git "]:
        if line.startswith("diff --git "):
            names = find("\n".join(added)) if added else set()
            if names:
                found.setdefault(path, set()).update(names)
            path, added = line.removeprefix("diff --git ").partition(" b/")[0].removeprefix("a/"), []
        elif line.startswith("+") and not line.startswith("+++ "):
            added.append(line[1:])
    return found


def commit_changes(
    ws: Workspace,
    message: str,
    protection: Protection,
    limits: LimitsConfig | None = None,
    find_secrets: Callable[[str], set[str]] | None = None,
) -> CommitInfo | None:
    """Commit everything the agent changed on the run branch, or None when nothing changed.

    Refused, whatever the mounts allowed: a change over a `[limits]` bound, a change under a
    read-only or hidden path, where a deletion counts (a directory above a protected path moved
    away deletes the path), and a rename counts as both its sides; and a change that adds the value
    of a secret the run resolved (`find_secrets` names them), which a branch, a PR and every clone
    would keep.
    """
    limits = limits or LimitsConfig()
    _check_worktree_limits(ws, limits)
    ws.git(["add", "--all"])
    try:
        changes = _staged_changes(ws)
        if not changes:
            return None
        touched = sorted({change.path for change in changes if protection.covers(change.path)})
        if touched:
            raise WorkspaceError(
                f"the agent's change touches protected paths: {', '.join(touched)}",
                hint="read-only and hidden paths in corral.toml, and corral's own control files, can never"
                " be changed, deleted or moved by a run",
            )
        _check_staged_limits(ws, changes, limits)
        leaked = secrets_added(ws, find_secrets) if find_secrets is not None else {}
        if leaked:
            names = sorted({name for found in leaked.values() for name in found})
            raise WorkspaceError(
                f"the agent's change adds the value of secret {', '.join(names)} to"
                f" {', '.join(sorted(leaked))}; nothing was committed",
                hint="a secret pushed to a branch stays in every clone: find why the agent wrote it"
                " (`corral show RUN` and the audit log name the tool call), and rotate the secret if"
                " the agent saw it",
            )
    except WorkspaceError:
        ws.git(["reset", "--quiet"])
        raise
    stat_text = ws.git(["diff", "--cached", "--no-renames", "--stat"]).strip()
    ws.git(["commit", "--quiet", "--no-verify", "-m", message], env=_AUTHOR)
    commit = ws.git(["rev-parse", "HEAD"]).strip()
    try:
        patch = ws.git(["show", "--no-renames", "--no-ext-diff", "--no-textconv", "--format=", commit])
    except UnicodeDecodeError:
        patch = "(the patch holds bytes that are not UTF-8; see the commit in the repository)\n" + stat_text
    return CommitInfo(
        commit=commit, files=tuple(change.path for change in changes), diff_stat=stat_text, patch=patch
    )


def protected_in_commit(ws: Workspace, protection: Protection) -> tuple[str, ...]:
    """The protected paths of the base commit, outermost per kind: what every sandbox must mask."""
    entries = ws.git(["ls-tree", "-r", "-t", "-z", "--full-tree", ws.base_commit]).split("\0")
    found: dict[str, set[str]] = {"hidden": set(), "readonly": set()}
    for entry in entries:
        meta, _, path = entry.partition("\t")
        if not path:
            continue
        kind = protection.kind(path, is_dir=meta.split()[1] == "tree")
        if kind is not None:
            found[kind].add(path)
    return tuple(sorted({*outermost(found["hidden"]), *outermost(found["readonly"])}))


def branch_diff_stat(repo: Path, base_commit: str, branch: str) -> str:
    try:
        return _git(["diff", "--stat", f"{base_commit}..refs/heads/{branch}"], cwd=repo).strip()
    except WorkspaceError:
        return ""


def delete_branch(repo: Path, branch: str) -> None:
    with contextlib.suppress(WorkspaceError):
        _git(["branch", "-D", branch], cwd=repo)
