"""What a run is asked to do (`RunRequest`) and what its phases hand each other.

Kept apart from `corral.runs` so the fleet (`corral.fleet`) can carry a request to a worker host
without importing the lifecycle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from corral.config import Config
from corral.incident.source import IncidentSource
from corral.model.cassette import Cassette
from corral.model.playbook import Playbook
from corral.services import PreferenceSelection
from corral.workspace import Workspace

if TYPE_CHECKING:
    from corral.gateway.run import RunGatewayHandle
    from corral.model.budget import Budget
    from corral.model.upstream_failures import UpstreamFailures
    from corral.sandbox import Sandbox

RunMode = Literal["run", "regress", "replay"]
Script = Playbook | Cassette


@dataclass(frozen=True)
class RunRequest:
    """`mode` "regress" re-runs a recorded task with `model` (a candidate); "replay" re-drives one
    from its cassette. Both start from `base_commit`, end at `evaluated` after the checks, and are
    never offered for approval; regression runs also lose every forge and deploy write grant."""

    task: str
    repo: Path
    playbook: Path | None = None
    """A playbook (YAML) or a cassette (JSON) for the scripted model to play."""
    config_path: Path | None = None
    requester: str | None = None
    """Who asked (a `corral server` user); None: the person at this keyboard (`corral.identity`)."""
    mode: RunMode = "run"
    model: str | None = None
    base_commit: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    cassette: Cassette | None = None
    preference_ids: tuple[int, ...] | None = None
    """Inject exactly these preferences (a replay: what the recording was told) instead of retrieving."""

    incident: IncidentSource | None = None
    """An incident run: the source's read class is granted, and glob grants reaching its writes dropped."""


def evaluation_grants(grants: list[str]) -> list[str]:
    """What a regression run may call: no forge or deploy tool that acts (reads stay)."""
    kept = []
    for grant in grants:
        tool = grant.split("(", 1)[0]
        acts = tool.startswith(("forge.", "deploy.")) and not tool.endswith((":read", "list_checks"))
        if not acts:
            kept.append(grant)
    return kept


@dataclass
class Resources:
    """What a run holds and must give back, in reverse order, whatever happens."""

    containers: list[Sandbox] = field(default_factory=list)
    socket_dir: Path | None = None
    workspace: Workspace | None = None
    stoppers: list[Callable[[], None]] = field(default_factory=list)


def config_hash(config: Config) -> str:
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Prepared:
    """What preparing hands to the agent phase."""

    sandbox: Sandbox
    model_token: str
    gateway: RunGatewayHandle
    prefs: PreferenceSelection
    budget: Budget
    failures: UpstreamFailures
