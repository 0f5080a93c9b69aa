"""A run waits for approval on Temporal; the Temporal server restarts; the approval, sent as a signal
under the delivery rules, is acted on by the workflow after the restart: the run merges."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.delivery.approve import approve
from corral.errors import ApprovalRefused, SignalRefused
from corral.fleet.decisions import FleetDecisions
from corral.runs import RunOrchestrator
from corral.services import Services
from corral.settings import Settings
from corral.state.machine import Phase
from tests.fleet.conftest import (
    Fleet,
    TemporalServer,
    audit_events,
    make_fleet,
    note_request,
)

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.temporal]


@pytest.fixture
def restartable_fleet(
    own_temporal: TemporalServer, postgres_url: str, monkeypatch: pytest.MonkeyPatch, agent_image: str
) -> Iterator[tuple[Fleet, TemporalServer]]:
    for fleet in make_fleet(own_temporal.address, postgres_url, monkeypatch):
        yield fleet, own_temporal


def test_an_approval_survives_a_temporal_restart(
    restartable_fleet: tuple[Fleet, TemporalServer], tmp_path: Path
) -> None:
    fleet, server = restartable_fleet
    fleet.start_worker("solo", 1)
    fleet.wait_ready("solo")
    request = note_request(tmp_path)
    repo = request.repo
    services = Services(Settings())
    try:
        run_id = RunOrchestrator(services).run(request)
        run = services.find_run(run_id)
        assert run.phase == Phase.AWAITING_APPROVAL, (run.failure_reason, fleet.logs())

        server.stop()
        server.start()
        fleet.wait_ready("solo")  # the worker reconnected by itself

        # The delivery rules come first: a refused approval sends nothing and records nothing.
        with pytest.raises(ApprovalRefused, match="may not approve"):
            approve(services, run_id, approver="mallory")
        assert services.find_run(run_id).phase == Phase.AWAITING_APPROVAL
        with pytest.raises(SignalRefused, match="not waiting for promotion"):
            FleetDecisions(services, fleet.target, run).require_waiting("promotion")

        delivered = approve(services, run_id, approver="bob")
        assert delivered.phase == Phase.MERGED
        head = str(run.meta["head_commit"])
        log = subprocess.run(
            ["git", "-C", str(repo), "log", "--format=%H %P", "-1", "main"], capture_output=True, text=True
        ).stdout.split()
        assert log[0] == delivered.merge_commit and head in log[1:]
        kinds = [e.kind for e in audit_events(run_id)]
        assert kinds.count("approval.granted") == 1 and kinds.count("merge.made") == 1
        assert "fleet.activity" in kinds

        # The workflow is done: a second decision is refused by the rules, and by Temporal.
        with pytest.raises(ApprovalRefused, match="already approved"):
            approve(services, run_id, approver="bob")
        with pytest.raises(SignalRefused, match="completed"):
            FleetDecisions(services, fleet.target, run).require_waiting("approval")
    finally:
        services.close()
