"""Which mounts a run's container gets: the workspace, read-only paths, masked (hidden) paths, sockets.

The mounts are the enforcement (DESIGN invariant 3), so this module fails closed: a pattern that
matches a symbolic link, or a path that resolves outside the workspace, is refused rather than
guessed at, because a bind mount follows a link on the host and could expose a host file; and a
protected path of the base commit that is no longer where it was is refused, never skipped.
Patterns are matched by `corral.paths`, the same matcher the hook policy and the commit check use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from docker.types import Mount

from corral.errors import SandboxError
from corral.paths import PathRules, Protection, ancestors, outermost
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
    anchored: list[str] = field(default_factory=list)
    """Directories above protected paths, bound onto themselves so that they cannot be moved."""


def _inside(workspace: Path, relative: str, why: str) -> str:
    """`relative` itself, after checking that it exists and that no part of it is a symbolic link."""
    candidate = workspace / relative
    try:
        real: Path | None = candidate.resolve(strict=True)
    except OSError:  # missing, or a dangling link
        real = None
    if real is None and not candidate.is_symlink():
        raise SandboxError(
            f"{candidate} ({why}) is gone: it was deleted, or moved away with a directory above it",
            hint="a protected path of the base commit must stay where it is, so the run fails closed",
        )
    if real != workspace.resolve(strict=True) / relative:
        raise SandboxError(
            f"{candidate} ({why}) is or passes through a symbolic link",
            hint="corral never mounts through a link: remove the link, or name the real path in corral.toml",
        )
    return relative


def _rules(patterns: tuple[str, ...] | list[str], key: str) -> PathRules:
    try:
        return PathRules(list(patterns), key)
    except ValueError as exc:
        raise SandboxError(str(exc), hint=f"fix {key} in corral.toml [sandbox]") from None


def _unreadable(error: OSError) -> None:
    """A directory the walk cannot list could hold a match: refuse rather than skip it."""
    raise SandboxError(
        f"{error.filename} cannot be listed to find protected paths in it: {error.strerror}",
        hint="a directory under the workspace must stay readable to corral",
    )


def find_on_disk(workspace: Path, rules: PathRules) -> list[str]:
    """Every workspace path the rules match, outermost only, refusing a match that is a link.

    The walk never follows a link, and a matched directory is taken whole (not descended), so what
    is found is exactly what one mount per path covers. The workspace's own `.git` is left to
    `plan_mounts`, which always protects it.
    """
    found: list[str] = []
    if not rules:
        return found
    for root, dirs, files in os.walk(workspace, onerror=_unreadable):
        here = Path(root).relative_to(workspace).as_posix()
        prefix = "" if here == "." else here + "/"
        descend = []
        for name in sorted(dirs):
            relative = prefix + name
            if relative == ".git":
                continue
            if rules.matches(relative, is_dir=True):
                found.append(_inside(workspace, relative, f"matched by {rules.key}"))
            elif not (Path(root) / name).is_symlink():
                descend.append(name)
        dirs[:] = descend
        for name in sorted(files):
            relative = prefix + name
            if relative != ".git" and rules.matches(relative):
                found.append(_inside(workspace, relative, f"matched by {rules.key}"))
    return outermost(found)


def resolve_patterns(workspace: Path, patterns: tuple[str, ...] | list[str], key: str = "paths") -> list[str]:
    """Existing workspace paths that the patterns name, relative, sorted, without nested duplicates."""
    return find_on_disk(workspace, _rules(patterns, key))


def _anchors(readonly: list[str], hidden: list[str]) -> list[str]:
    """The directories above protected paths, each of which gets a mount of its own.

    The kernel moves a mount along when a directory above it is renamed, and the real file then sits
    at the new path on the host, unmasked. A mount point itself cannot be renamed or removed (EBUSY),
    so each directory above a protected path is bound onto itself. One inside a read-only mount is
    left alone: nothing can be renamed there, and a writable bind would make it writable.
    """
    mounted = set(readonly) | set(hidden)
    anchored: set[str] = set()
    for path in mounted:
        for directory in ancestors(path):
            if directory in mounted or any(directory.startswith(ro + "/") for ro in readonly):
                continue
            anchored.add(directory)
    return sorted(anchored)


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

    protection = Protection(
        _rules(spec.readonly_paths, "readonly_paths"), _rules(spec.hidden_paths, "hidden_paths")
    )
    hidden = set(find_on_disk(workspace, protection.hidden))
    readonly = set(find_on_disk(workspace, protection.readonly))
    for path in spec.required_paths:
        _inside(workspace, path, "a protected path of the base commit")
        kind = protection.kind(path, is_dir=(workspace / path).is_dir())
        if kind is None:
            raise SandboxError(f"{path} is listed as protected, but no pattern in corral.toml matches it")
        (hidden if kind == "hidden" else readonly).add(path)
    # A worktree's `.git` is a file naming the gitdir the host's git later uses: the agent must not
    # repoint it. A clone's `.git` is the repository itself: read-only (hooks, config), and masked
    # whole when paths are hidden, since its objects hold the hidden files' content.
    dot_git = workspace / ".git"
    if dot_git.is_dir() and not dot_git.is_symlink() and hidden:
        hidden.add(".git")
    elif dot_git.exists() and not dot_git.is_symlink():
        readonly.add(".git")
    plan.hidden = outermost(hidden)
    hidden_dirs = [path for path in plan.hidden if (workspace / path).is_dir()]

    def under_hidden_dir(path: str) -> bool:
        return any(path.startswith(outer + "/") for outer in hidden_dirs)

    # A mount inside a hidden directory would be laid over its tmpfs and show through; drop it.
    plan.readonly = [
        path for path in outermost(readonly) if not under_hidden_dir(path) and path not in plan.hidden
    ]
    plan.anchored = _anchors(plan.readonly, plan.hidden)
    for path in plan.anchored:
        plan.mounts.append(Mount(f"{workdir}/{path}", str(workspace.resolve() / path), type="bind"))
    for path in plan.readonly:
        plan.mounts.append(
            Mount(f"{workdir}/{path}", str(workspace.resolve() / path), type="bind", read_only=True)
        )
    for path in plan.hidden:
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
