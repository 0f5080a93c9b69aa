"""Whether the disk under CORRAL_HOME (state, spool, worktrees, sockets) has room for a run to go on.

A run whose agent filled that disk cannot commit, check or record much more: it fails at once with
the path and what to do, rather than with whichever write happened to fail first.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from corral.errors import WorkspaceError

MIN_FREE_BYTES = 4 * 1024 * 1024


def low_space(path: Path, minimum: int = MIN_FREE_BYTES) -> str:
    """A sentence naming the full disk, or "" while it has `minimum` bytes free (or cannot be asked)."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return ""
    if usage.free >= minimum:
        return ""
    return (
        f"the disk holding {path} is full ({usage.free // 1024} KiB free of "
        f"{usage.total // (1024 * 1024)} MiB)"
    )


WHAT_TO_DO = "free space on it, or set CORRAL_HOME to a larger disk, and run the task again"


def check_disk(home: Path) -> None:
    """After the agent: a full disk under CORRAL_HOME (the agent may have filled it) fails the run
    before anything is committed, naming the disk rather than the first write that failed."""
    full = low_space(home)
    if full:
        raise WorkspaceError(f"{full}: nothing of the run is committed", hint=WHAT_TO_DO)


def with_disk(home: Path, reason: str) -> str:
    """`reason`, led by the full disk and what to do when that is what the run ran into."""
    full = low_space(home)
    if not full or full in reason:
        return reason
    return f"{full}: {WHAT_TO_DO} (it failed with {reason.splitlines()[0]})"
