"""The deploy contract: stage a run's result on a preview target; promote only on a human approval.

`DeployTarget` is the protocol; `LocalDeploy` (deploy/local.py) records deployments in a JSON file under
`Settings.home/'deploy'`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from corral.events import utcnow

DeployState = Literal["staged", "promoted"]


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


class DeployTarget(Protocol):
    targets: tuple[str, ...]
    """The targets `stage` accepts; promotion always goes to production."""

    def stage(self, *, run_id: str, ref: str, target: str) -> Deployment: ...

    def promote(self, deployment_id: str, *, approver: str) -> Deployment:
        """Promote to production on a recorded human approval. Never reachable with an agent token."""
        ...

    def get(self, deployment_id: str) -> Deployment: ...

    def list(self, run_id: str | None = None) -> list[Deployment]: ...
