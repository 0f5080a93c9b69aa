"""A run waits for approval on Temporal while its host's worker drains and another host's worker takes
over; the rejection, sent as a signal under the review rules, ends the workflow as `rejected`, its
feedback becomes a candidate preference, and no later decision is taken."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from corral.delivery.approve import approve
from corral.errors import CorralError, RunError, SignalRefused
from corral.fleet.client import blocking, connect
from corral.fleet.decisions import FleetDecisions
from corral.review import reject
from corral.runs import RunOrchestrator
from corral.services import Services
from corral.settings import Settings
from corral.state.machine import Phase
from tests.fleet.conftest import Fleet, audit_events, note_request

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.temporal]


def _workflow_result(fleet: Fleet, run_id: str) -> Any:
    """What the run's workflow returned; a workflow still waiting after 60 s fails the test."""

    async def result() -> Any:
        client = await connect(fleet.target)
        return await asyncio.wait_for(client.get_workflow_handle(run_id).result(), 60)

    return blocking(result())


def test_a_rejection_after_a_worker_restart_ends_the_workflow_and_teaches_the_next_run(
    fleet: Fleet, tmp_path: Path
) -> None:
    fleet.start_worker("first", 1)
    fleet.wait_ready("first")
    services = Services(Settings())
    try:
        run_id = RunOrchestrator(services).run(note_request(tmp_path))
        run = services.find_run(run_id)
        assert run.phase == Phase.AWAITING_APPROVAL, (run.failure_reason, fleet.logs())

        # The host that ran it drains and stops; another host's worker serves the queue from now on.
        assert fleet.workers["first"].stop() == 0, fleet.logs()
        fleet.start_worker("second", 1)
        fleet.wait_ready("second")

        # The review rules come first: a non-approver's rejection sends nothing and records nothing.
        with pytest.raises(RunError, match="not an approver"):
            reject(services, run_id, "no", reviewer="mallory")
        assert services.find_run(run_id).phase == Phase.AWAITING_APPROVAL

        rejection = reject(services, run_id, "Keep notes in docs/, not at the root.", reviewer="bob")
        assert rejection.preference is not None  # the feedback, offered to the project's next runs
        assert _workflow_result(fleet, run_id) == "rejected"  # the signal ended the workflow
        assert services.find_run(run_id).phase == Phase.REJECTED
        kinds = [e.kind for e in audit_events(run_id)]
        assert kinds.count("approval.rejected") == 1 and "merge.made" not in kinds

        # Nothing decides the run again: not the rules, not Temporal.
        with pytest.raises(CorralError):
            approve(services, run_id, approver="bob")
        with pytest.raises(SignalRefused, match="completed"):
            FleetDecisions(services, fleet.target, run).require_waiting("approval")
        assert services.find_run(run_id).phase == Phase.REJECTED
    finally:
        services.close()
