"""Bad input and faults around the fleet: an unreachable Temporal server, a host without Docker, a
decision for a run that has no workflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corral.delivery.approve import approve
from corral.errors import SignalRefused
from corral.services import Services
from corral.settings import Settings
from corral.state.machine import Phase
from tests.delivery.runs import awaiting_run
from tests.fleet.conftest import CONFIG, Fleet, make_repo

CORRAL = str(Path(sys.executable).parent / "corral")


def test_an_unreachable_temporal_fails_corral_run_at_once(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "# x\n"}, CONFIG)
    env = {**os.environ, "CORRAL_TEMPORAL_ADDRESS": "127.0.0.1:9"}
    proc = subprocess.run(
        [CORRAL, "run", "do it", "--repo", str(repo)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "cannot reach the Temporal server at 127.0.0.1:9 (from CORRAL_TEMPORAL_ADDRESS)" in proc.stderr
    assert "never runs in-process instead" in proc.stderr
    services = Services(Settings())
    try:
        assert services.state().list_runs() == []  # nothing was recorded, nothing ran here
    finally:
        services.close()


@pytest.mark.temporal
@pytest.mark.postgres
def test_a_host_without_docker_refuses_work_and_says_so(bare_fleet: Fleet) -> None:
    fleet = bare_fleet
    fleet.start_worker("nodocker", 2, {"DOCKER_HOST": f"unix://{fleet.root}/no-such-docker.sock"})
    fleet.wait_ready("nodocker")
    listed = fleet.corral("workers", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["host_id"] == "nodocker" and row["state"] == "refusing: Docker Engine down"
    assert row["docker"] is False and "Docker Engine is not running" in row["docker_error"]
    text = fleet.corral("workers")
    assert "refusing: Docker Engine down" in text.stdout


@pytest.mark.temporal
@pytest.mark.postgres
def test_a_decision_for_a_run_without_a_workflow_is_refused(bare_fleet: Fleet, tmp_path: Path) -> None:
    """The fleet is configured (`bare_fleet`), but this run's workflow never existed."""
    repo = make_repo(tmp_path / "repo", {"README.md": "# x\n"}, CONFIG)
    services = Services(Settings())
    try:
        run = awaiting_run(services, repo, "fleet", "ghost")
        services.state().update_run(run.run_id, meta={**run.meta, "workflow_id": run.run_id})
        with pytest.raises(SignalRefused, match=f"run {run.run_id} has no workflow on Temporal"):
            approve(services, run.run_id, approver="bob")
        record = services.find_run(run.run_id)
        assert record.phase == Phase.AWAITING_APPROVAL
        assert services.state().list_approvals(run.run_id) == []
    finally:
        services.close()
