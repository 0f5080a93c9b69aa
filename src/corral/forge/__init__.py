"""The forge contract: where a run's result becomes a pull request that waits for a human.

`Forge` is the protocol the gateway's `forge.*` tools and the run lifecycle call; `LocalForge`
(forge/local.py) records pull requests in a JSON file under `Settings.home/'forge'`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from corral.events import utcnow

PrState = Literal["open", "merged", "closed"]
CheckStatus = Literal["pending", "passed", "failed"]


class Comment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    author: str
    body: str
    ts: datetime = Field(default_factory=utcnow)


class Check(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    status: CheckStatus
    summary: str = ""


class PullRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: int
    repo: str
    head: str
    base: str
    title: str
    body: str = ""
    author: str
    state: PrState = "open"
    comments: list[Comment] = []
    checks: list[Check] = []
    merged_by: str = ""
    created: datetime = Field(default_factory=utcnow)

    @property
    def url(self) -> str:
        return f"corral-forge://{self.repo}/pulls/{self.number}"


class Forge(Protocol):
    def open_pull_request(
        self, repo: Path, *, head: str, base: str, title: str, body: str, author: str
    ) -> PullRequest: ...

    def get(self, number: int) -> PullRequest: ...

    def comment(self, number: int, *, body: str, author: str) -> PullRequest: ...

    def list_checks(self, number: int) -> list[Check]: ...

    def record_check(self, number: int, check: Check) -> PullRequest: ...

    def merge(self, number: int, *, approver: str) -> PullRequest:
        """Merge on a recorded human approval. Never reachable with an agent token."""
        ...

    def list(self, repo: Path | None = None) -> list[PullRequest]: ...
