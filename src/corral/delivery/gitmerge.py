"""A real git merge of a run's head into the base branch, on the host, that never loses work.

The merge is computed without a working tree (`git merge-tree --write-tree`), committed with
`git commit-tree` (the approver in a trailer) and published with `git update-ref` against the old
value, so a base branch that moved meanwhile is never overwritten. A base branch that is checked out
somewhere is updated together with that working tree (`git read-tree -m -u`, what `git merge` does)
only when the checkout is clean; a checkout with changes is refused before anything moves.

Every command goes through `corral.workspace`'s hardened git (no hooks, no fsmonitor, no system or
global config) plus no attributes file: the tree being merged was written by the agent.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

from corral.errors import MergeRefused
from corral.paths import Protection
from corral.workspace import _git, run_git

_MERGE_GIT = ["-c", "core.attributesFile=/dev/null", "-c", "merge.renormalize=false"]


@dataclass(frozen=True)
class MergeResult:
    commit: str
    previous: str
    checkout: Path | None
    """The working tree that was updated with the base branch, when it is checked out."""


def _rev(repo: Path, rev: str) -> str:
    proc = run_git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=repo)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def is_merged(repo: Path, base_branch: str, head_sha: str) -> bool:
    """Whether the base branch already contains `head_sha` (a rerun must not merge twice)."""
    base = _rev(repo, f"refs/heads/{base_branch}")
    if not base or not head_sha:
        return False
    return run_git(["merge-base", "--is-ancestor", head_sha, base], cwd=repo).returncode == 0


def checkout_of(repo: Path, branch: str) -> Path | None:
    """The working tree (the main one or a linked one) that has `branch` checked out, if any."""
    listing = _git(["worktree", "list", "--porcelain"], cwd=repo)
    path: Path | None = None
    for line in listing.splitlines():
        if line.startswith("worktree "):
            path = Path(line.removeprefix("worktree "))
        elif line == f"branch refs/heads/{branch}" and path is not None and path.is_dir():
            return path
    return None


def protected_changes(repo: Path, base: str, head: str, protection: Protection, workdir: str) -> list[str]:
    """Paths between `base` and `head` that a run may not ship: a change under a read-only or hidden
    path (a rename counts as both sides), and a symbolic link that points into one or out of the
    repository (what it points at is what a reader of the merged tree gets)."""
    raw = _git(["diff", "--no-renames", "--no-ext-diff", "--raw", "-z", "--abbrev=40", base, head], cwd=repo)
    fields = raw.split("\0")
    found: list[str] = []
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        if not path:
            continue
        if protection.covers(path):
            found.append(path)
            continue
        parts = meta.split()
        if len(parts) < 4 or parts[1] != "120000":
            continue
        target = _git(["cat-file", "blob", parts[3]], cwd=repo)
        if target.startswith(workdir.rstrip("/") + "/"):
            target = target[len(workdir.rstrip("/")) + 1 :]
        elif target.startswith("/"):
            found.append(f"{path} -> {target} (outside the repository)")
            continue
        else:
            target = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
        if target == ".." or target.startswith("../"):
            found.append(f"{path} -> {target} (outside the repository)")
        elif protection.covers(target) or protection.covers(target, is_dir=True):
            found.append(f"{path} -> {target}")
    return found


def merge_at(repo: Path, base_branch: str, head_sha: str, *, message: str, approver: str) -> MergeResult:
    """Merge exactly `head_sha` into `base_branch` with a merge commit, or raise `MergeRefused` with
    nothing changed (no ref moved, no file touched)."""
    ref = f"refs/heads/{base_branch}"
    old = _rev(repo, ref)
    if not old:
        raise MergeRefused(f"{repo}: base branch {base_branch!r} does not exist", hint="restore the branch")
    if not _rev(repo, head_sha):
        raise MergeRefused(f"{repo}: the approved commit {head_sha} does not exist", hint="rerun the task")
    checkout = checkout_of(repo, base_branch)
    if checkout is not None:
        dirty = _git(["status", "--porcelain", "--untracked-files=no"], cwd=checkout).splitlines()
        if dirty:
            shown = ", ".join(line[3:] for line in dirty[:5]) + (", ..." if len(dirty) > 5 else "")
            raise MergeRefused(
                f"{base_branch} is checked out at {checkout} with uncommitted changes ({shown}); "
                "merging there would mix the run's change into your work",
                hint=f"commit or stash them (`git -C {checkout} stash`), or check out another branch "
                "there, then approve again",
            )
    proc = run_git([*_MERGE_GIT, "merge-tree", "--write-tree", "--name-only", old, head_sha], cwd=repo)
    lines = proc.stdout.splitlines()
    if proc.returncode == 1:
        # The tree, the conflicted paths, a blank line, then git's messages.
        names = lines[1 : lines.index("")] if "" in lines else lines[1:]
        conflicts = sorted({line for line in names if line.strip()})
        raise MergeRefused(
            f"the run's change conflicts with {base_branch} in: {', '.join(conflicts) or '(see git)'}",
            hint="resolve by rerunning the task on the new base, or merge the run branch by hand",
            conflicts=conflicts,
        )
    if proc.returncode != 0 or not lines:
        raise MergeRefused(f"git merge-tree failed: {proc.stderr.strip()}", hint="check the repository")
    tree = lines[0].strip()
    email = approver if "@" in approver else f"{approver}@corral.invalid"
    env = {
        "GIT_AUTHOR_NAME": approver,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": "corral",
        "GIT_COMMITTER_EMAIL": "corral@corral.invalid",
    }
    commit = _git(["commit-tree", tree, "-p", old, "-p", head_sha], cwd=repo, env=env, stdin=message).strip()
    if checkout is not None:
        # Would the working tree take the merge (no untracked file in the way)? Ask before moving.
        dry = run_git([*_MERGE_GIT, "read-tree", "-n", "-m", "-u", old, commit], cwd=checkout)
        if dry.returncode != 0:
            raise MergeRefused(
                f"{checkout}: the merge would overwrite files there: {dry.stderr.strip()}",
                hint="move those untracked files away, then approve again",
            )
    moved = run_git(["update-ref", "-m", f"corral: merge {head_sha[:12]}", ref, commit, old], cwd=repo)
    if moved.returncode != 0:
        raise MergeRefused(
            f"{base_branch} moved while merging ({moved.stderr.strip()})", hint="approve again to retry"
        )
    if checkout is not None:
        updated = run_git([*_MERGE_GIT, "read-tree", "-m", "-u", old, commit], cwd=checkout)
        if updated.returncode != 0:
            run_git(["update-ref", ref, old, commit], cwd=repo)
            raise MergeRefused(
                f"{checkout}: updating the working tree failed, the merge was undone: "
                f"{updated.stderr.strip()}",
                hint="check the checkout, then approve again",
            )
    return MergeResult(commit=commit, previous=old, checkout=checkout)
