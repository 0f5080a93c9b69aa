"""Find and remove what a killed corral process left behind: containers, sockets (and a shell
session's managed-settings directory), worktrees; stop the local preview servers of ended runs, and
delete `corral server` session rows long ended.

gc judges a run by its phase. A run in a working phase (queued … checking) needs the corral process
that drives it: when its recorded pid is gone, the run lost its driver mid-phase and is recorded as
failed. A run at rest waits for a human (awaiting_approval, and the later review phases) and has no
process by design: gc never fails it and never touches its branch; it only reaps what the run no
longer needs, its containers, sockets and worktree. A run on the fleet (a Temporal workflow) is never
failed by gc: on a host that does not hold it now, what it left is reaped. gc acts on the runs of one
team; what belongs to runs it does not know (another team's) is left alone and counted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from corral.audit.log import AuditLog
from corral.deploy.local import LocalDeploy
from corral.errors import CorralError
from corral.events import RunFinished, RunPhase
from corral.sandbox import SandboxBackend
from corral.settings import Settings
from corral.state.base import utcnow
from corral.state.db import StateStore
from corral.state.machine import Phase, is_terminal, needs_driver
from corral.state.sessions import KEEP_ENDED, purge_sessions
from corral.workspace import remove_worktree

ORPHAN_REASON = "orphaned: the corral process driving it died"


@dataclass
class GcReport:
    team: str = "default"
    runs_failed: list[str] = field(default_factory=list)
    events_shipped: int = 0
    containers: list[str] = field(default_factory=list)
    mask_dirs: list[str] = field(default_factory=list)
    socket_dirs: list[str] = field(default_factory=list)
    worktrees: list[str] = field(default_factory=list)
    preview_servers: list[str] = field(default_factory=list)
    """Deployments of ended runs whose local preview server was stopped."""
    sessions_purged: int = 0
    """`corral server` session rows that ended or expired more than `KEEP_ENDED` ago, deleted."""
    other_teams: int = 0
    """Resources of runs this team's state does not hold (another team's), left alone."""


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


def record_failure_in_audit(audit: AuditLog, run_id: str, from_phase: str, reason: str) -> None:
    """Continue the dead run's chain (from its spooled head) so its audit ends as its state does."""
    recorder = audit.for_run(run_id)
    try:
        recorder.emit(
            RunPhase(from_phase=from_phase, to_phase=Phase.FAILED.value, reason=reason), durable=True
        )
        recorder.emit(RunFinished(phase=Phase.FAILED.value, reason=reason), durable=True)
    finally:
        recorder.close()


def _driven_elsewhere(pid: int | None) -> bool:
    return pid_alive(pid) and pid != os.getpid()


def collect(
    settings: Settings, state: StateStore, backend: SandboxBackend | None, audit: AuditLog | None = None
) -> GcReport:
    """Fail runs that lost their driver, reap what no run needs any more, and ship spooled events.

    Opening the audit log already shipped what dead processes left in the spool: every event that was
    fsynced before its tool ran reaches the store.
    """
    report = GcReport(team=state.team)
    host = settings.fleet_host()
    if audit is not None and audit.online:
        report.events_shipped = audit.ship_pending()
    live: set[str] = set()
    repos: dict[str, str] = {}
    ended: set[str] = set()
    for run in state.list_runs(limit=100_000):
        repos[run.run_id] = run.repo
        if is_terminal(run.phase):
            ended.add(run.run_id)
        if run.meta.get("workflow_id"):
            # The fleet drives it: Temporal starts it again on another host when its host dies, so gc
            # never fails it. Here it is live only while this host's worker holds it.
            if needs_driver(run.phase) and run.meta.get("host") == host and _driven_elsewhere(run.pid):
                live.add(run.run_id)
            continue
        if not needs_driver(run.phase):
            continue
        if _driven_elsewhere(run.pid):
            live.add(run.run_id)
            continue
        with contextlib.suppress(CorralError):
            state.transition(run.run_id, Phase.FAILED, ORPHAN_REASON, expect=run.phase)
            report.runs_failed.append(run.run_id)
            if audit is not None:
                record_failure_in_audit(audit, run.run_id, str(run.phase), ORPHAN_REASON)

    def reapable(run_id: str) -> bool:
        if run_id in live:
            return False
        if run_id not in repos:
            report.other_teams += 1
            return False
        return True

    if backend is not None:
        for container_id, run_id in backend.run_containers().items():
            if reapable(run_id):
                backend.remove_container(container_id)
                report.containers.append(container_id)
        report.containers += backend.reap_warm()
        report.mask_dirs = [str(path) for path in backend.sweep_masks()]
    for directory in (settings.sockets_dir, settings.shell_files_dir):
        if not directory.is_dir():
            continue
        for entry in sorted(directory.iterdir()):
            if not reapable(entry.name.removesuffix(".wrapper")):
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            report.socket_dirs.append(str(entry))
    if settings.worktrees_dir.is_dir():
        for entry in sorted(settings.worktrees_dir.iterdir()):
            if not reapable(entry.name):
                continue
            remove_worktree(Path(repos[entry.name]), entry)
            report.worktrees.append(str(entry))
    ended.update(report.runs_failed)
    report.preview_servers = LocalDeploy(settings.deploy_dir).stop_previews(ended.__contains__)
    report.sessions_purged = purge_sessions(state, utcnow() - KEEP_ENDED)
    return report
