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

from corral.audit.log import AuditLog
from corral.errors import CorralError
from corral.events import RunFinished, RunPhase
from corral.sandbox import SandboxBackend
from corral.settings import Settings
from corral.state.db import StateStore
from corral.state.machine import Phase, is_terminal
from corral.workspace import remove_worktree


@dataclass
class GcReport:
    runs_failed: list[str] = field(default_factory=list)
    events_shipped: int = 0
    containers: list[str] = field(default_factory=list)
    mask_dirs: list[str] = field(default_factory=list)
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


def _record_orphan_in_audit(audit: AuditLog, run_id: str, from_phase: str, reason: str) -> None:
    """Continue the dead run's chain (from its spooled head) so its audit ends as its state does."""
    recorder = audit.for_run(run_id)
    try:
        recorder.emit(
            RunPhase(from_phase=from_phase, to_phase=Phase.FAILED.value, reason=reason), durable=True
        )
        recorder.emit(RunFinished(phase=Phase.FAILED.value, reason=reason), durable=True)
    finally:
        recorder.close()


def collect(
    settings: Settings, state: StateStore, backend: SandboxBackend | None, audit: AuditLog | None = None
) -> GcReport:
    """Fail orphaned runs, remove their containers, sockets and worktrees, and ship spooled events.

    Opening the audit log already shipped what dead processes left in the spool: every event that was
    fsynced before its tool ran reaches the store.
    """
    report = GcReport()
    if audit is not None and audit.online:
        report.events_shipped = audit.ship_pending()
    live: set[str] = set()
    repos: dict[str, str] = {}
    for run in state.list_runs(limit=100_000):
        repos[run.run_id] = run.repo
        if is_terminal(run.phase):
            continue
        if pid_alive(run.pid) and run.pid != os.getpid():
            live.add(run.run_id)
            continue
        reason = "orphaned: the corral process driving it died"
        with contextlib.suppress(CorralError):
            state.transition(run.run_id, Phase.FAILED, reason)
            report.runs_failed.append(run.run_id)
            if audit is not None:
                _record_orphan_in_audit(audit, run.run_id, str(run.phase), reason)
    if backend is not None:
        for container_id in backend.orphans(live):
            backend.remove_container(container_id)
            report.containers.append(container_id)
        report.mask_dirs = [str(path) for path in backend.sweep_masks()]
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
