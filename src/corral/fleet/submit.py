"""`corral run` with Temporal configured: record the run, start its workflow, follow it to rest.

Temporal is reached first, so an unreachable server fails the command before anything is recorded.
"""

from __future__ import annotations

import time
from dataclasses import replace

from corral.audit.observed import Observer
from corral.config import Config
from corral.errors import FleetError, WorkspaceError
from corral.events import RunSubmitted
from corral.fleet import FleetTarget
from corral.fleet.client import blocking, connect, start_run
from corral.fleet.types import RunJob
from corral.run_record import creation_event, open_record
from corral.run_request import RunRequest
from corral.services import Services
from corral.state.machine import AT_REST, TERMINAL, Phase
from corral.workspace import commit_exists, inspect_repo

POLL_SECONDS = 0.25


def submit_run(
    services: Services, observers: list[Observer], target: FleetTarget, request: RunRequest, config: Config
) -> str:
    """Record the run (queued), start its workflow (id = run id), and return the run id."""
    if request.incident is not None or request.cassette is not None or request.mode != "run":
        raise FleetError(
            "only plain `corral run` tasks run on the fleet yet (not incident, replay or regression runs)",
            hint="unset CORRAL_TEMPORAL_ADDRESS (and [stores] temporal) to run this one in-process",
        )
    blocking(connect(target))  # reachable, or the command fails before anything is recorded
    repo_info = inspect_repo(request.repo.resolve(), config.project.base_branch)
    if request.base_commit:
        if not commit_exists(repo_info.root, request.base_commit):
            raise WorkspaceError(
                f"{repo_info.root}: the base commit {request.base_commit[:12]} does not exist"
            )
        repo_info = replace(repo_info, base_commit=request.base_commit, dirty_paths=())
    meta = {**request.meta, "team": config.project.team}
    run_id, recorder, sink, _evidence = open_record(
        services, observers, replace(request, meta=meta), config, repo_info
    )
    state = services.state(config)
    # Before the workflow exists: from now on gc leaves the run to the fleet.
    state.update_run(run_id, meta={**state.get_run(run_id).meta, "workflow_id": run_id})
    job = RunJob(
        run_id=run_id,
        task=request.task,
        repo=str(repo_info.root),
        playbook=str(request.playbook.resolve()) if request.playbook else None,
        config_path=str(request.config_path.resolve()) if request.config_path else None,
        requester=state.get_run(run_id).requester,
        meta=meta,
        heartbeat_seconds=services.settings.fleet_heartbeat_seconds,
        queue=target.queue,
    )
    try:
        sink.emit(creation_event(services, request, config, repo_info, run_id))
        sink.emit(
            RunSubmitted(
                workflow_id=run_id,
                namespace=target.namespace,
                address=target.address,
                task_queue=target.queue,
            ),
            durable=True,
        )
    finally:
        # Closing ships the chain to the store: the host that takes the run continues it from there.
        recorder.close()
    try:
        blocking(_start(target, job))
    except BaseException:
        state.transition(run_id, Phase.FAILED, "its workflow could not be started")
        raise
    return run_id


async def _start(target: FleetTarget, job: RunJob) -> None:
    await start_run(await connect(target), job)


def wait_run(services: Services, config: Config, run_id: str, timeout: float | None = None) -> str:
    """Follow the run in the state store until it rests (awaiting approval) or ends; report phases."""
    state = services.state(config)
    seen = ""
    deadline = time.monotonic() + timeout if timeout is not None else None
    while True:
        record = state.get_run(run_id)
        if record.phase != seen:
            seen = record.phase
            host = str(record.meta.get("host", ""))
            services.progress(f"run {run_id}: {seen}" + (f" on host {host}" if host else ""))
        if Phase(record.phase) in AT_REST | TERMINAL:
            return run_id
        if deadline is not None and time.monotonic() > deadline:
            raise FleetError(
                f"run {run_id} is still {record.phase} on the fleet",
                hint="`corral workers` shows whether any host takes work; `corral show RUN` follows it",
            )
        time.sleep(POLL_SECONDS)
