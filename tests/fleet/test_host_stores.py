"""A worker's runs borrow its stores: the host's activities open each run's Services with
`Services.for_run`, so two runs held at once (and a retry's look-up) open no store of their own, and
dropping a run leaves the worker's stores open. In-process, without Temporal; Docker for the backend."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from corral import events as ev
from corral.audit.log import AuditLog
from corral.demo import DEMO_CONFIG, DEMO_FILES, DEMO_TASK
from corral.fleet.host import HostActivities
from corral.fleet.types import RunJob, StepArgs
from corral.run_record import open_record
from corral.run_request import RunRequest
from corral.runs import RunOrchestrator
from corral.services import Services
from corral.settings import load_settings
from corral.state.db import StateStore
from corral.workspace import inspect_repo
from tests.e2e.conftest import make_repo
from tests.e2e.test_server_runs import _counting

pytestmark = pytest.mark.docker


def _recorded(services: Services, repo: Path) -> StepArgs:
    """A run as `corral run` records it for the fleet, and the prepare step's arguments."""
    request = RunRequest(task=DEMO_TASK, repo=repo)
    config, _script = RunOrchestrator(services).prepare_inputs(request)
    info = inspect_repo(repo, config.project.base_branch)
    run_id, recorder, _sink, _evidence = open_record(services, [], request, config, info)
    recorder.close()
    job = RunJob(run_id=run_id, task=DEMO_TASK, repo=str(repo), meta={"team": config.project.team})
    return StepArgs(job=job, attempt=1, host_id="h1")


def test_runs_held_by_a_host_share_its_stores_and_dropping_one_leaves_them_open(
    docker_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = Services(load_settings())
    host = HostActivities(worker.settings, "corral", "h1", 2, worker)
    try:
        steps = [_recorded(worker, make_repo(tmp_path / n, DEMO_FILES, DEMO_CONFIG)) for n in ("a", "b")]
        state_opens = _counting(monkeypatch, StateStore)
        audit_opens = _counting(monkeypatch, AuditLog)
        held = [host._open(step) for step in steps]
        assert host._finished_before(StepArgs(steps[0].job, attempt=2, host_id="h1")) == ""
        assert (state_opens, audit_opens) == ([], [])  # everything came from the worker's stores
        for h in held:
            assert h.services is not worker and h.services.state() is worker.state()
            assert h.services.audit() is worker.audit() and h.run.state is worker.state()
        assert held[0].services.docker() is not held[1].services.docker()
        for h, step in zip(held, steps, strict=True):
            h.run.sink.emit(ev.AgentStopped(turns=1, reason=f"held {step.job.run_id}"))
            h.run.recorder.close()
            host._drop(step.job.run_id)
        assert host.held == {}
        # The worker's stores still answer after both runs' Services were closed.
        for step in steps:
            assert worker.find_run(step.job.run_id).pid == os.getpid()  # written by `_open`
            assert [e.kind for e in worker.audit().read(step.job.run_id)] == ["agent.stopped"]
    finally:
        worker.close()
