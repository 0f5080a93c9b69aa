"""The `[limits]` bounds on a run's change: one file's size, the total size and the number of files.

What the agent wrote is hostile in size as well as in content. `commit_changes` (corral/workspace.py)
asks git which paths changed and hands git's answers here twice: before `git add`, sizes come from
`lstat` on the paths `git status` lists, so a giant file is never read or copied into the user's
repository; before the commit, from the sizes of the staged blobs, which is the last word. These
functions read git's `-z` output and decide; they run no git themselves.
"""

from __future__ import annotations

import stat
from pathlib import Path

from corral.config import LimitsConfig
from corral.errors import LimitError

MB = 1024 * 1024


def _mb(size: int) -> str:
    return f"{size / MB:.1f} MB"


def check(sizes: dict[str, int], count: int, limits: LimitsConfig, when: str) -> None:
    """Fail on the first bound that `sizes` (path -> bytes of new content) and `count` go past.

    `count` counts every changed path, deletions included; a deletion adds no bytes. A size exactly at
    a bound is within it.
    """
    if count > limits.max_files:
        some = ", ".join(sorted(sizes)[:3]) or "deletions only"
        raise LimitError(
            f"the run {when} {count} files, over [limits] max_files = {limits.max_files} (e.g. {some})",
            hint="raise [limits] max_files in corral.toml if a change this wide is intended",
        )
    for path, size in sorted(sizes.items()):
        if size > limits.max_file_mb * MB:
            raise LimitError(
                f"{path} is {_mb(size)}, over [limits] max_file_mb = {limits.max_file_mb:g}",
                hint="keep large files out of the run's change, or raise [limits] max_file_mb in corral.toml",
            )
    total = sum(sizes.values())
    if total > limits.max_diff_mb * MB:
        largest = max(sizes, key=lambda p: sizes[p])
        raise LimitError(
            f"the run {when} {_mb(total)} of files, over [limits] max_diff_mb = {limits.max_diff_mb:g} "
            f"(largest: {largest}, {_mb(sizes[largest])})",
            hint="raise [limits] max_diff_mb in corral.toml if a change this large is intended",
        )


def worktree_sizes(root: Path, status: str) -> tuple[dict[str, int], int]:
    """From `git status --porcelain=v1 -z --no-renames` run in `root`: the size on disk of each changed
    regular file, and the number of changed paths.

    Only `lstat` is asked, so a giant file is never read and a link is never followed: a link adds no
    bytes here, and the staged check counts its blob (the link's target, as text). A path that is gone
    is a deletion: it counts, but adds no bytes.
    """
    paths = [entry[3:] for entry in status.split("\0") if len(entry) > 3]
    sizes: dict[str, int] = {}
    for path in paths:
        try:
            info = (root / path).lstat()
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            sizes[path] = info.st_size
    return sizes, len(paths)


def staged_blobs(raw: str) -> dict[str, str]:
    """From `git diff --cached --no-renames --raw -z --abbrev=40`: path -> the blob the commit would
    hold. Deletions have no new blob, and a gitlink (an embedded repository) names a commit elsewhere,
    so neither is listed."""
    fields = raw.split("\0")
    wanted: dict[str, str] = {}
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        _, new_mode, _, new_sha, _ = meta.split()
        if path and set(new_sha) != {"0"} and new_mode != "160000":
            wanted[path] = new_sha
    return wanted
