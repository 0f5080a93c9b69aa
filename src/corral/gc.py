"""Find and remove what a killed corral process left behind: containers, sockets, worktrees.

A run is live while its phase is not terminal and the process that drives it (its recorded pid)
is alive. Everything labelled or named with a run id that is not live is an orphan.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from corral.errors import CorralError
from corral.sandbox import SandboxBackend
from corral.settings import Settings
from corral.state.db import StateStore
from corral.state.machine import Phase, is_terminal
from corral.workspace import remove_worktree


@dataclass
class GcReport:
    runs_failed: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    socket_dirs: list[str] = field(default_factory=list)
    worktrees: list[str] = field(default_factory=list)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collect(settings: Settings, state: StateStore, backend: SandboxBackend | None) -> GcReport:
    report = GcReport()
    live: set[str] = set()
    repos: dict[str, str] = {}
    for run in state.list_runs(limit=100_000):
        repos[run.run_id] = run.repo
        if is_terminal(run.phase):
            continue
        if pid_alive(run.pid) and run.pid != os.getpid():
            live.add(run.run_id)
            continue
        with contextlib.suppress(CorralError):
            state.transition(run.run_id, Phase.FAILED, "orphaned: the corral process driving it died")
            report.runs_failed.append(run.run_id)
    if backend is not None:
        for container_id in backend.orphans(live):
            backend.remove_container(container_id)
            report.containers.append(container_id)
    if settings.sockets_dir.is_dir():
        for entry in settings.sockets_dir.iterdir():
            run_id = entry.name.removesuffix(".wrapper")
            if run_id in live:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            report.socket_dirs.append(str(entry))
    if settings.worktrees_dir.is_dir():
        for entry in settings.worktrees_dir.iterdir():
            if entry.name in live:
                continue
            remove_worktree(Path(repos.get(entry.name, "/nonexistent")), entry)
            report.worktrees.append(str(entry))
    return report
