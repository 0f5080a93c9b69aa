"""A run at awaiting_approval as its state row and a real git branch: for the steps after the sandbox."""

from __future__ import annotations

import subprocess
from pathlib import Path

from corral.services import Services
from corral.state.machine import Phase
from corral.state.models import RunRecord


def git(repo: Path, *args: str) -> str:
    cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def awaiting_run(services: Services, repo: Path, project: str, name: str) -> RunRecord:
    """A run of `project` whose branch adds `<name>.txt`, with passing checks, awaiting approval."""
    state = services.state()
    state.ensure_project(project, repo=str(repo))
    base = git(repo, "rev-parse", "main").strip()
    record = state.create_run(project, f"add {name}", str(repo), base, requester="alice")
    git(repo, "branch", record.branch, "main")
    git(repo, "worktree", "add", "-q", str(repo.parent / f"wt-{name}"), record.branch)
    (repo.parent / f"wt-{name}" / f"{name}.txt").write_text(f"{name}\n")
    git(repo.parent / f"wt-{name}", "add", "-A")
    git(repo.parent / f"wt-{name}", "commit", "-qm", name)
    head = git(repo, "rev-parse", record.branch).strip()
    git(repo, "worktree", "remove", str(repo.parent / f"wt-{name}"))
    for phase in (Phase.PREPARING, Phase.RUNNING, Phase.CHECKING, Phase.AWAITING_APPROVAL):
        state.transition(record.run_id, phase)
    state.update_run(
        record.run_id,
        checks_passed=True,
        checks={"command": "pytest -q", "exit_code": 0},
        diffstat=f" {name}.txt | 1 +",
        meta={"head_commit": head},
    )
    return state.get_run(record.run_id)
