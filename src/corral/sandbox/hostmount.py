"""Host-side mounts for warm sandboxes: mount(2) and umount2(2) through libc, as root.

A warm container was created with its workspace and socket directories bound from empty per-slot
host directories with slave propagation, so a mount made later on the host under a slot shows up
inside that one container. A remount does not propagate, so a read-only bind is made read-only in a
private staging directory first and only then moved into the slot: the container never sees it
writable, not even for an instant.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

from corral.errors import SandboxError

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SHARED = 1 << 20
MNT_DETACH = 0x2
_FLAGS = {"ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _b(value: str | Path | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(source: str | Path | None, target: Path, fstype: str | None, flags: int, data: str = "") -> None:
    if _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data) if data else None) != 0:
        err = ctypes.get_errno()
        raise SandboxError(
            f"mount {source} on {target} failed: {os.strerror(err)}",
            hint="warm sandboxes need corral to run as root on the Docker host (or run without --warm)",
        )


def mount_points() -> set[str]:
    """Every mount point of this mount namespace (os.path.ismount misses a bind on the same device)."""
    with open("/proc/self/mountinfo", "rb") as f:
        lines = f.read().splitlines()
    # Field 5 is the mount point, with space, tab, newline and backslash escaped as octal.
    return {_unescape(line.split(b" ")[4]) for line in lines if line.count(b" ") >= 4}


def _unescape(raw: bytes) -> str:
    return os.fsdecode(raw.decode("unicode_escape").encode("latin-1"))


def is_mount(path: Path) -> bool:
    return str(path) in mount_points()


def detach(target: Path) -> None:
    """Lazily unmount everything at `target` (its submounts too) until nothing is mounted there."""
    for _ in range(64):
        if not is_mount(target):
            return
        if _libc.umount2(_b(target), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            raise SandboxError(f"umount {target} failed: {os.strerror(err)}", hint="`corral gc` retries")
    raise SandboxError(f"{target} is still a mount point after 64 unmounts", hint="see `findmnt`")


def ensure_self_mount(directory: Path, propagation: int) -> None:
    """Make `directory` a mount point of its own with the given propagation (MS_SHARED or MS_PRIVATE)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not is_mount(directory):
        mount(directory, directory, None, MS_BIND)
    mount(None, directory, None, propagation)


def parse_options(options: str) -> tuple[int, str]:
    """A tmpfs options string ("ro,nosuid,mode=0000,size=4k") as mount flags and fs data."""
    flags, data = 0, []
    for item in options.split(","):
        if item in _FLAGS:
            flags |= _FLAGS[item]
        elif item and item != "rw":
            data.append(item)
    return flags, ",".join(data)


def attach_bind(source: Path, target: Path, *, read_only: bool, stage: Path) -> None:
    """Bind `source` at `target`; read-only ones made read-only in `stage` (private) before they move."""
    if not read_only:
        mount(source, target, None, MS_BIND | MS_REC)
        return
    _make_point(stage, source.is_dir())
    try:
        mount(source, stage, None, MS_BIND | MS_REC)
        mount(None, stage, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        mount(stage, target, None, MS_MOVE)
    finally:
        _drop_point(stage)


def attach_tmpfs(target: Path, options: str, *, stage: Path) -> None:
    flags, data = parse_options(options)
    _make_point(stage, True)
    try:
        mount("tmpfs", stage, "tmpfs", flags, data)
        mount(stage, target, None, MS_MOVE)
    finally:
        _drop_point(stage)


def _make_point(point: Path, directory: bool) -> None:
    if directory:
        point.mkdir(mode=0o700)
    else:
        point.touch(mode=0o600, exist_ok=False)


def _drop_point(point: Path) -> None:
    """Remove a staging mount point, first detaching whatever a failed attach left on it."""
    if is_mount(point):
        detach(point)
    if point.is_dir():
        point.rmdir()
    else:
        point.unlink(missing_ok=True)
