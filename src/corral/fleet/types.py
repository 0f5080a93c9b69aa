"""What crosses Temporal: plain dataclasses, serialised by its JSON converter.

Imported by the workflows' sandbox, so nothing here imports corral's components.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunJob:
    """A run's workflow input: what the submitter recorded, enough for any host to start it."""

    run_id: str
    task: str
    repo: str
    playbook: str | None = None
    config_path: str | None = None
    requester: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    heartbeat_seconds: float = 30.0
    max_attempts: int = 3
    queue: str = "corral"
    """The fleet's shared task queue, where `claim` and the delivery steps go."""


@dataclass
class Claim:
    host_id: str
    task_queue: str


@dataclass
class StepArgs:
    job: RunJob
    attempt: int
    host_id: str
    previous_host: str = ""
    reason: str = ""
    """Why the previous attempt ended, for the audit of a retry."""


@dataclass
class Decision:
    """A human decision the delivery rules accepted and recorded: now the workflow acts on it."""

    action: str
    """`approve`, `reject` or `promote`."""
    actor: str


@dataclass
class DeliveryArgs:
    run_id: str
    team: str
    repo: str
    actor: str = "system"
    reason: str = ""


@dataclass
class HostStatus:
    """What `corral workers` shows of one host; its worker signals it to the host's registry workflow."""

    host_id: str
    task_queue: str
    max_runs: int
    fleet: str = "corral"
    """The shared queue of the fleet this host serves."""
    load: int = 0
    runs: list[str] = field(default_factory=list)
    docker: bool = True
    docker_error: str = ""
    draining: bool = False
    stopped: bool = False
    warm: int = 0
    """Sandboxes this host keeps pre-created and self-tested (`corral worker --warm N`); 0: none."""
    pid: int = 0
    updated: float = 0.0
    """Unix time of this status: a host silent for a few intervals is shown as lost."""


@dataclass
class RegressJob:
    """A scheduled `corral regress`: the same call a manual one makes, on some host."""

    repo: str
    candidate: str
    team: str
    queue: str = "corral"
    options: dict[str, Any] = field(default_factory=dict)
