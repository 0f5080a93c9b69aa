"""`corral worker --warm 1`: the host keeps a pool of hardened, self-tested sandboxes; a run it takes
starts in containers made before the run was submitted, the pool refills with new ones, and a drained
worker removes its pool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.runs import RunOrchestrator
from corral.sandbox import OWNER_LABEL, POOL_LABEL
from corral.services import Services
from corral.settings import Settings
from corral.state.machine import Phase
from tests.fleet.conftest import Fleet, audit_events, note_request, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.temporal]


def _pooled(client: Any, home: Path) -> set[str]:
    found = client.containers.list(filters={"label": [POOL_LABEL, f"{OWNER_LABEL}={home}"]})
    return {c.id for c in found if c.status == "running"}


def test_a_warm_worker_runs_in_its_pool_refills_and_removes_it_when_drained(
    fleet: Fleet, tmp_path: Path, docker_client: Any
) -> None:
    worker = fleet.start_worker("warm1", 1, extra_args=("--warm", "1"))
    fleet.wait_ready("warm1")
    (host,) = [h for h in fleet.hosts() if h.host_id == "warm1"]
    assert host.warm == 1
    before = wait_for(
        "the pool to fill", lambda: (p := _pooled(docker_client, worker.home)) and len(p) >= 2 and p
    )
    services = Services(Settings())
    try:
        run_id = RunOrchestrator(services).submit(note_request(tmp_path))
        state = services.state()
        record = wait_for(
            "the run to come to rest",
            lambda: (r := state.get_run(run_id)).phase in (Phase.AWAITING_APPROVAL, Phase.FAILED) and r,
        )
    finally:
        services.close()
    assert record.phase is Phase.AWAITING_APPROVAL, (record.failure_reason, fleet.logs())
    created = [e for e in audit_events(run_id) if e.kind == "sandbox.created"]
    assert [(e.purpose, e.warm) for e in created] == [("agent", True), ("checks", True)]
    assert {e.container_id for e in created} <= before
    after = wait_for(
        "the pool to refill", lambda: (p := _pooled(docker_client, worker.home)) and len(p) >= 2 and p
    )
    assert not after & before  # new containers: a claimed one is never handed out again
    assert worker.stop() == 0
    assert _pooled(docker_client, worker.home) == set()
