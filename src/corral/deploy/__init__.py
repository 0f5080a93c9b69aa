"""The deploy contract: stage a run's result on a preview target; promote only on a human approval.

`DeployTarget` is what the gateway's `deploy.*` tools call; `Deployer` adds what delivery needs after a
merge: build and stage a commit, promote, roll back, and name production. Backends, by the name
`[deploy] backend` gives, imported only when chosen (`deployer_class`):
- `local` (deploy/local.py, the default): the build runs in a sandbox, its output is served on
  127.0.0.1 (deploy/serve.py), promotion switches production atomically;
- `vercel` (deploy/vercel.py): the Vercel REST API.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from importlib import import_module
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from corral.errors import ConfigError
from corral.events import utcnow

DeployState = Literal["building", "staged", "promoted", "failed", "retired"]
"""`retired`: was production, replaced by a later promotion (kept for rollback)."""


class Deployment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    run_id: str
    ref: str
    target: str
    state: DeployState = "staged"
    url: str = ""
    promoted_by: str = ""
    created: datetime = Field(default_factory=utcnow)
    project: str = ""
    error: str = ""
    preview_url: str = ""
    """Where this deployment itself is served (its own port, or the backend's preview address)."""


class DeployTarget(Protocol):
    targets: tuple[str, ...]
    """The targets `stage` accepts; promotion always goes to production."""

    def stage(self, *, run_id: str, ref: str, target: str) -> Deployment: ...

    def promote(self, deployment_id: str, *, approver: str) -> Deployment:
        """Promote to production on a recorded human approval. Never reachable with an agent token."""
        ...

    def get(self, deployment_id: str) -> Deployment: ...

    def list(self, run_id: str | None = None) -> list[Deployment]: ...


class Deployer(DeployTarget, Protocol):
    def stage_commit(self, *, run_id: str, project: str, commit: str, branch: str) -> Deployment:
        """Build `commit` and stage it as a preview. A failed build raises `DeployError` and leaves a
        `failed` deployment; production is untouched."""
        ...

    def rollback(self, *, project: str, approver: str) -> Deployment:
        """Production back to the build it served before the current one; returns that deployment."""
        ...

    def production(self, project: str) -> Deployment | None: ...

    def production_url(self, project: str) -> str: ...


BACKENDS: dict[str, str] = {
    "local": "corral.deploy.local:LocalDeploy",
    "vercel": "corral.deploy.vercel:VercelDeploy",
}


def deployer_class(name: str) -> Callable[..., Deployer]:
    if name not in BACKENDS:
        raise ConfigError(
            f"[deploy] backend {name!r} is unknown", hint=f"use one of: {', '.join(sorted(BACKENDS))}"
        )
    module, _, attr = BACKENDS[name].partition(":")
    cls: Callable[..., Deployer] = getattr(import_module(module), attr)
    return cls
