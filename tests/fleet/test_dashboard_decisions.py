"""The dashboard's decisions on a fleet run: its API's approve goes through the same delivery rules and,
under Temporal, reaches the run's workflow as a signal: a viewer is refused with nothing sent, the
approver's approval merges exactly the reviewed head, and a second one is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from corral.runs import RunOrchestrator
from corral.services import Services
from corral.settings import Settings
from corral.state.machine import Phase
from corral.state.users import add_user, new_token
from corral.web.app import create_app
from tests.fleet.conftest import Fleet, audit_events, note_request

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.temporal]


def test_the_dashboards_approve_reaches_the_workflow_under_the_delivery_rules(
    fleet: Fleet, tmp_path: Path
) -> None:
    fleet.start_worker("solo", 1)
    fleet.wait_ready("solo")
    request = note_request(tmp_path)
    repo = request.repo
    services = Services(Settings())
    try:
        run_id = RunOrchestrator(services).run(request)
        run = services.find_run(run_id)
        assert run.phase == Phase.AWAITING_APPROVAL, (run.failure_reason, fleet.logs())
        state = services.state()
        add_user(state, "vera", "viewer", "")
        add_user(state, "bob", "approver", "")
        viewer = {"Authorization": f"Bearer {new_token(state, 'vera')}"}
        approver = {"Authorization": f"Bearer {new_token(state, 'bob')}"}
        with TestClient(create_app(services, secret="fleet-test-secret")) as client:
            refused = client.post(f"/api/runs/{run_id}/approve", json={"text": "ok"}, headers=viewer)
            assert refused.status_code == 403, refused.text
            assert services.find_run(run_id).phase == Phase.AWAITING_APPROVAL

            approved = client.post(f"/api/runs/{run_id}/approve", json={"text": "ok"}, headers=approver)
            assert approved.status_code == 200, approved.text
            assert approved.json()["phase"] == "merged"
            merge = approved.json()["merge_commit"]
            parents = subprocess.run(
                ["git", "-C", str(repo), "log", "--format=%H %P", "-1", "main"],
                capture_output=True,
                text=True,
            ).stdout.split()
            assert parents[0] == merge and str(run.meta["head_commit"]) in parents[1:]

            again = client.post(f"/api/runs/{run_id}/approve", json={"text": "again"}, headers=approver)
            assert again.status_code in (400, 409), again.text
        events = audit_events(run_id)
        kinds = [e.kind for e in events]
        assert kinds.count("approval.granted") == 1 and kinds.count("merge.made") == 1
        # The merge ran as the workflow's activity, on the run's workflow, not in this process.
        merges = [e for e in events if e.kind == "fleet.activity" and e.activity == "merge"]
        assert [(e.workflow_id, e.attempt) for e in merges] == [(run_id, 1)]
    finally:
        services.close()
