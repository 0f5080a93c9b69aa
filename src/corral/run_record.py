"""A new run's record: its state row (queued) and the start of its audit chain.

Used by the in-process lifecycle (`corral.runs`) and by the fleet's submitter (`corral.fleet.submit`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from corral.audit.observed import ObservedSink, Observer
from corral.config import Config
from corral.events import RunCreated
from corral.identity import current_user
from corral.incident.evidence import EvidenceCollector
from corral.run_request import RunRequest, config_hash
from corral.services import Services
from corral.workspace import RepoInfo

if TYPE_CHECKING:
    from corral.audit.recorder import RunRecorder


def open_record(
    services: Services,
    observers: list[Observer],
    request: RunRequest,
    config: Config,
    repo_info: RepoInfo,
) -> tuple[str, RunRecorder, ObservedSink, EvidenceCollector]:
    """Record a new run (queued) and open its audit chain: (run id, recorder, sink, evidence)."""
    from corral.sandbox.project_image import repository_name

    state = services.state(config)
    project = state.ensure_project(
        name=config.project.name,
        repo=str(repo_info.root),
        team=config.project.team,
        image=config.sandbox.image_name or repository_name("project", config.project.name),
        config_snapshot=config.model_dump(mode="json"),
    )
    record = state.create_run(
        project=project.name,
        task=request.task,
        repo=str(repo_info.root),
        base_commit=repo_info.base_commit,
        model=config.agent.model,
        small_model=config.agent.small_model,
        meta={**request.meta, "mode": request.mode} if request.mode != "run" else request.meta,
        requester=request.requester or current_user(),
    )
    state.update_run(record.run_id, pid=os.getpid())
    audit = services.audit(config)
    if not audit.online:
        services.progress(
            f"warning: {audit.status().description}; events are kept in the local spool and shipped later"
        )
    recorder = audit.for_run(record.run_id, team=config.project.team)
    evidence = EvidenceCollector()
    return record.run_id, recorder, ObservedSink(recorder, [*observers, evidence]), evidence


def creation_event(
    services: Services, request: RunRequest, config: Config, repo_info: RepoInfo, run_id: str
) -> RunCreated:
    requester = services.state(config).get_run(run_id).requester
    exposed = sorted(config.agent_secrets())
    if exposed:
        # The agent may print, commit or send such a value anywhere its tools reach: say so.
        services.progress(
            f'WARNING: secrets exposed to the agent\'s sandbox (expose = "agent"): {", ".join(exposed)}'
        )
    return RunCreated(
        actor=f"human:{requester}" if requester else "system",
        task=request.task,
        repo=str(repo_info.root),
        base_commit=repo_info.base_commit,
        branch=f"corral/{run_id}",
        config_hash=config_hash(config),
        model=config.agent.model,
        small_model=config.agent.small_model,
        dirty_paths=list(repo_info.dirty_paths),
    )
