"""The suite's bookkeeping without a sandbox: task selection from the state store, skipped tasks,
both sides' epochs under --rerun-baseline, failed epochs that do not abort, and the gate's inputs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from corral.errors import ConfigError
from corral.regress.suite import Suite, SuiteOptions
from corral.services import Services
from corral.settings import Settings
from corral.state.machine import Phase

PINNED = "claude-sonnet-4-5-20250929"
CANDIDATE = "claude-candidate-20260101"


def _repo(root: Path) -> tuple[Path, str]:
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    git = ["git", "-C", str(root)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "i"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    return root, head.stdout.strip()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    services = Services(Settings())
    repo, base = _repo(tmp_path / "repo")
    state = services.state()
    state.ensure_project(name="project", repo=str(repo), config_snapshot={})
    state.pin_model("project", PINNED, "claude-haiku-4-5-20251001", "2.1.332", pinned_by="ops")
    for i, decision in enumerate(["approved", "approved", "rejected"]):
        run = state.create_run("project", f"task {i}", str(repo), base, model=PINNED)
        for phase in (Phase.PREPARING, Phase.RUNNING, Phase.CHECKING, Phase.AWAITING_APPROVAL):
            state.transition(run.run_id, phase)
        state.update_run(run.run_id, checks_passed=True)
        state.record_approval(run.run_id, "alice", decision)  # type: ignore[arg-type]
        if decision == "approved":
            state.transition(run.run_id, Phase.APPROVED)
            state.transition(run.run_id, Phase.MERGED)
        else:
            state.transition(run.run_id, Phase.REJECTED)
    undecided = state.create_run("project", "still waiting", str(repo), base)
    state.transition(undecided.run_id, Phase.PREPARING)
    lost = state.create_run("project", "on a rewritten commit", str(repo), "e" * 40)
    state.transition(lost.run_id, Phase.FAILED, "old")
    state.record_approval(lost.run_id, "alice", "rejected")
    yield services
    services.close()


def _candidate(tmp_path: Path, name: str, model: str) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"model": model, "tasks": {}}))  # covers no task: every epoch fails
    return path


def test_rerun_baseline_gives_both_sides_the_same_epochs_and_failures_do_not_abort(
    services: Services, tmp_path: Path
) -> None:
    options = SuiteOptions(
        candidate=CANDIDATE,
        since=timedelta(days=1),
        epochs=2,
        rerun_baseline=True,
        playbooks=_candidate(tmp_path, "c.yaml", CANDIDATE),
        baseline_playbooks=_candidate(tmp_path, "b.yaml", PINNED),
    )
    suite = Suite(services, options).run()
    assert suite.baseline_model == PINNED  # the pin, not corral.toml's default
    assert sorted(r.task.task for r in suite.results) == ["task 0", "task 1", "task 2"]
    assert [r.task.decision for r in sorted(suite.results, key=lambda r: r.task.task)] == [
        "approved",
        "approved",
        "rejected",
    ]
    assert [(k.split(":", 2)[2], why) for k, why in suite.window.skipped] == [
        ("on a rewritten commit", "the base commit eeeeeeeeeeee no longer exists")
    ]
    for result in suite.results:
        assert [s.epoch for s in result.baseline] == [0, 1] == [s.epoch for s in result.candidate]
        assert all(not s.passed and "no playbook for task" in s.reason for s in result.candidate)
    assert suite.analysis is not None and suite.analysis.tasks == 3
    assert suite.verdict == "inconclusive" and "fewer than the 8" in suite.analysis.reason


def test_recorded_baseline_scores_each_original_run(services: Services, tmp_path: Path) -> None:
    options = SuiteOptions(
        candidate=CANDIDATE,
        since=timedelta(days=1),
        epochs=1,
        playbooks=_candidate(tmp_path, "c.yaml", CANDIDATE),
    )
    suite = Suite(services, options).run()
    passed = {r.task.task: [s.passed for s in r.baseline] for r in suite.results}
    assert passed == {"task 0": [True], "task 1": [True], "task 2": [False]}  # rejected is a failure


def test_a_candidate_file_for_another_model_is_refused(services: Services, tmp_path: Path) -> None:
    options = SuiteOptions(candidate=CANDIDATE, playbooks=_candidate(tmp_path, "c.yaml", PINNED))
    with pytest.raises(ConfigError, match="the suite's candidate"):
        Suite(services, options).run()


def test_an_empty_window_has_nothing_to_compare(tmp_path: Path) -> None:
    services = Services(Settings())
    try:
        suite = Suite(services, SuiteOptions(candidate=CANDIDATE)).run()
    finally:
        services.close()
    assert suite.verdict == "empty" and suite.results == [] and suite.analysis is None
