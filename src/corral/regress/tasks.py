"""Which recorded runs a regression suite re-runs: the window's runs that reached a human decision.

A task is one (project, task text, base commit); its recorded runs are the baseline's epochs, and the
decision labels it. Runs that were themselves regression or replay runs are never tasks. A task whose
base commit no longer exists in its repository is skipped, with its reason, not failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from corral.state.db import StateStore
from corral.state.machine import Phase
from corral.state.models import RunRecord
from corral.workspace import commit_exists

DECIDED_PHASES: frozenset[str] = frozenset(
    p.value for p in Phase if p.value in {"rejected", "merged", "approved", "staged", "promoted"}
)
"""Phases a human decision put a run in. Later phases of the delivery chain join as they exist."""
_SCAN_LIMIT = 100_000


@dataclass(frozen=True)
class RecordedTask:
    key: str
    project: str
    task: str
    repo: str
    base_commit: str
    decision: str
    """'approved' or 'rejected': the newest human decision on the task's runs."""
    runs: tuple[RunRecord, ...]
    approved_files: tuple[str, ...] = ()
    """Files the approved diff touched (empty when the humans rejected it)."""


@dataclass
class Window:
    tasks: list[RecordedTask] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(task key, reason) for each recorded task that cannot be re-run."""


def _decision(store: StateStore, run: RunRecord) -> str | None:
    approvals = [a for a in store.list_approvals(run_id=run.run_id) if a.subject == "run"]
    if approvals:
        return approvals[-1].decision
    if run.phase == Phase.REJECTED:
        return "rejected"
    if run.phase.value in DECIDED_PHASES:
        return "approved"
    return None


def select_tasks(
    store: StateStore,
    since: datetime,
    project: str | None = None,
    head_files: Callable[[str], list[str]] | None = None,
) -> Window:
    """The window's decided tasks, oldest first. `head_files` gives the files a run's commit touched
    (from its audit), for the same-files score."""
    window = Window()
    grouped: dict[str, list[tuple[RunRecord, str]]] = {}
    for run in store.list_runs(limit=_SCAN_LIMIT, project=project):
        if run.created_at < since or run.meta.get("mode") in ("regress", "replay"):
            continue
        decision = _decision(store, run)
        if decision is None:
            continue
        key = f"{run.project}:{run.base_commit[:12]}:{run.task}"
        grouped.setdefault(key, []).append((run, decision))
    for key, entries in sorted(grouped.items(), key=lambda kv: min(r.created_at for r, _ in kv[1])):
        entries.sort(key=lambda e: e[0].created_at)
        first = entries[0][0]
        if not Path(first.repo).is_dir():
            window.skipped.append((key, f"the repository {first.repo} no longer exists"))
            continue
        if not commit_exists(Path(first.repo), first.base_commit):
            window.skipped.append((key, f"the base commit {first.base_commit[:12]} no longer exists"))
            continue
        decision = entries[-1][1]
        approved = [r for r, d in entries if d == "approved"]
        files: tuple[str, ...] = ()
        if approved and head_files is not None:
            files = tuple(head_files(approved[-1].run_id))
        window.tasks.append(
            RecordedTask(
                key=key,
                project=first.project,
                task=first.task,
                repo=first.repo,
                base_commit=first.base_commit,
                decision=decision,
                runs=tuple(r for r, _ in entries),
                approved_files=files,
            )
        )
    return window
