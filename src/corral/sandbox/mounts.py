"""Which mounts a run's container gets: the workspace, read-only paths, masked (hidden) paths, sockets.

The mounts are the enforcement (DESIGN invariant 3), so this module fails closed: a pattern that
matches a symbolic link, or a path that resolves outside the workspace, is refused rather than
guessed at, because a bind mount follows a link on the host and could expose a host file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from docker.types import Mount

from corral.errors import SandboxError
from corral.sandbox import SOCKETS_IN_CONTAINER, SandboxSpec

HOME_IN_CONTAINER = "/home/agent"
AGENT_UID = 1000
# nosuid/nodev on every scratch filesystem; /tmp keeps exec because tools (pytest plugins, Claude
# Code's own helpers) may run files from it, and without setuid files or capabilities that adds no
# privilege. Docker copies the image directory's owner and mode onto the tmpfs, so the image sets
# /home/agent to 1000:1000 0700 as well.
TMPFS = {
    "/tmp": "rw,nosuid,nodev,exec,mode=1777,size=1g",
    HOME_IN_CONTAINER: f"rw,nosuid,nodev,exec,uid={AGENT_UID},gid={AGENT_UID},mode=0700,size=1g",
}


@dataclass
class MountPlan:
    mounts: list[Mount] = field(default_factory=list)
    tmpfs: dict[str, str] = field(default_factory=lambda: dict(TMPFS))
    """Container path -> tmpfs options: /tmp, HOME and the masks over hidden directories."""
    readonly: list[str] = field(default_factory=list)
    """Workspace-relative paths bound read-only over themselves."""
    hidden: list[str] = field(default_factory=list)
    """Workspace-relative paths masked by an empty tmpfs (directories) or an empty file (files)."""


def _strip_recursive(pattern: str) -> str:
    """`dir/**` and `dir/` name the directory itself, which one mount covers."""
    pattern = pattern.rstrip("/")
    while pattern.endswith("/**"):
        pattern = pattern[: -len("/**")]
    return pattern


def _inside(workspace: Path, candidate: Path, pattern: str) -> str:
    """The workspace-relative path of candidate, refusing links and anything outside the workspace."""
    relative = candidate.relative_to(workspace)
    try:
        real: Path | None = candidate.resolve(strict=True)
    except OSError:  # a dangling link
        real = None
    if real != workspace.resolve(strict=True) / relative:
        raise SandboxError(
            f"{workspace / relative} (matched by {pattern!r}) is or passes through a symbolic link",
            hint="corral never mounts through a link: remove the link, or name the real path in corral.toml",
        )
    return relative.as_posix()


def resolve_patterns(workspace: Path, patterns: tuple[str, ...] | list[str]) -> list[str]:
    """Existing workspace paths that the globs name, relative, sorted, without nested duplicates."""
    found: set[str] = set()
    for pattern in patterns:
        stripped = _strip_recursive(pattern)
        if not stripped or stripped in ("**", "."):
            raise SandboxError(
                f"path pattern {pattern!r} names the whole workspace",
                hint="name a directory or file inside the repository in corral.toml [sandbox]",
            )
        if PurePosixPath(stripped).is_absolute() or ".." in PurePosixPath(stripped).parts:
            raise SandboxError(f"path pattern {pattern!r} must be relative to the workspace, without '..'")
        for candidate in sorted(workspace.glob(stripped)):
            if candidate.is_symlink() or candidate.exists():
                found.add(_inside(workspace, candidate, pattern))
    return _outermost(found)


def _outermost(paths: set[str]) -> list[str]:
    """Drop paths inside another path of the same set: the outer mount already covers them."""
    kept: list[str] = []
    for path in sorted(paths, key=lambda p: (p.count("/"), p)):
        if not any(path.startswith(outer + "/") for outer in kept):
            kept.append(path)
    return sorted(kept)


def grant_agent_access(workspace: Path) -> None:
    """Make the workspace writable by the agent (uid 1000), which the container runs as.

    As root: hand every file to uid/gid 1000 (links themselves, never their targets). Host-side git
    then needs `-c safe.directory=<path>` because the tree is no longer root's. As another user,
    the tree must already belong to uid 1000, since only root may give files away.
    """
    if os.geteuid() != 0:
        owner = workspace.stat().st_uid
        if owner != AGENT_UID:
            raise SandboxError(
                f"workspace {workspace} belongs to uid {owner}, but the agent runs as uid {AGENT_UID}",
                hint="run corral as uid 1000 or as root, so the agent can write its worktree",
            )
        return
    os.lchown(workspace, AGENT_UID, AGENT_UID)
    for root, dirs, files in os.walk(workspace):
        for name in (*dirs, *files):
            os.lchown(os.path.join(root, name), AGENT_UID, AGENT_UID)


def _make_mask_file(mask_dir: Path, relative: str) -> Path:
    mask_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    mask = mask_dir / relative.replace("/", "%")
    mask.touch(mode=0o000, exist_ok=True)
    os.chmod(mask, 0o000)
    return mask


def plan_mounts(spec: SandboxSpec, mask_dir: Path) -> MountPlan:
    """Every mount of the run's container. Empty mask files are created in `mask_dir` (per run)."""
    workspace = spec.workspace
    if not workspace.is_dir():
        raise SandboxError(
            f"workspace {workspace} is not a directory", hint="create the run's worktree first"
        )
    workdir = spec.workdir.rstrip("/")
    plan = MountPlan()
    plan.mounts.append(Mount(workdir, str(workspace.resolve()), type="bind", read_only=False))

    hidden = resolve_patterns(workspace, spec.hidden_paths)
    hidden_dirs = [path for path in hidden if (workspace / path).is_dir()]

    def under_hidden_dir(path: str) -> bool:
        return any(path.startswith(outer + "/") for outer in hidden_dirs)

    readonly = resolve_patterns(workspace, spec.readonly_paths)
    # A worktree's `.git` is a file naming the gitdir the host's git later uses: the agent must not
    # repoint it. A clone's `.git` is the repository itself: read-only (hooks, config), and masked
    # whole when paths are hidden, since its objects hold the hidden files' content.
    dot_git = workspace / ".git"
    if dot_git.is_dir() and not dot_git.is_symlink() and hidden:
        hidden = _outermost({*hidden, ".git"})
        hidden_dirs.append(".git")
    elif dot_git.exists() and not dot_git.is_symlink():
        readonly = _outermost({*readonly, ".git"})
    # A mount inside a hidden directory would be laid over its tmpfs and show through; drop it.
    plan.readonly = [path for path in readonly if not under_hidden_dir(path) and path not in hidden]
    plan.hidden = hidden
    for path in plan.readonly:
        plan.mounts.append(
            Mount(f"{workdir}/{path}", str(workspace.resolve() / path), type="bind", read_only=True)
        )
    for path in hidden:
        target = f"{workdir}/{path}"
        if path in hidden_dirs:
            # Empty, read-only and mode 000: the agent can neither list it nor write into it. (The
            # options string, because the SDK's Mount drops a tmpfs mode of 0 as unset.)
            plan.tmpfs[target] = "ro,nosuid,nodev,noexec,mode=0000,size=4k"
        else:
            mask = _make_mask_file(mask_dir, path)
            plan.mounts.append(Mount(target, str(mask), type="bind", read_only=True))

    for target, source in sorted(spec.readonly_files.items()):
        if not source.is_file() or source.is_symlink():
            raise SandboxError(f"{source} (to be bound at {target}) is not a regular file")
        plan.mounts.append(Mount(target, str(source.resolve()), type="bind", read_only=True))

    if spec.socket_dir is not None:
        if not spec.socket_dir.is_dir():
            raise SandboxError(f"socket directory {spec.socket_dir} does not exist")
        info = spec.socket_dir.stat()
        if info.st_uid != AGENT_UID and not info.st_mode & 0o001:
            raise SandboxError(
                f"socket directory {spec.socket_dir} (mode {info.st_mode & 0o777:o}) cannot be entered by "
                f"the agent's uid {AGENT_UID}, so its bridges would fail",
                hint="chmod the run's socket directory 0755 (it is private to the run's containers)"
                " and its sockets 0666",
            )
        # Read-only: the agent may connect to the sockets (connect ignores a read-only mount) but
        # cannot replace one with its own listener or delete it.
        plan.mounts.append(
            Mount(SOCKETS_IN_CONTAINER, str(spec.socket_dir.resolve()), type="bind", read_only=True)
        )
    return plan
