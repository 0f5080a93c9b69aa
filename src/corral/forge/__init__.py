"""The forge contract: where a run's result becomes a pull request that waits for a human.

`Forge` is the protocol the gateway's `forge.*` tools, the run lifecycle and `corral approve` call.
Backends, by the name `[forge] backend` gives, imported only when chosen (`forge_class`):
- `local` (forge/local.py, the default): pull requests in a JSON file under `Settings.home/'forge'`,
  merged by a real git merge into the base branch on this host (corral/delivery/gitmerge.py);
- `github` (forge/github.py): the GitHub REST API, with the token held on the host.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from importlib import import_module
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from corral.errors import ConfigError
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
    merge_commit: str = ""
    created: datetime = Field(default_factory=utcnow)
    html_url: str = ""
    """The forge's own address of the pull request (GitHub's `html_url`); empty on the local forge."""

    @property
    def url(self) -> str:
        return self.html_url or f"corral-forge://{self.repo}/pulls/{self.number}"


class Forge(Protocol):
    def open_pull_request(
        self, repo: Path, *, head: str, base: str, title: str, body: str, author: str
    ) -> PullRequest: ...

    def get(self, number: int) -> PullRequest: ...

    def comment(self, number: int, *, body: str, author: str) -> PullRequest: ...

    def list_checks(self, number: int) -> list[Check]: ...

    def record_check(self, number: int, check: Check) -> PullRequest: ...

    def publish(self, repo: Path, branch: str) -> None:
        """Make the run branch reachable by the forge before its pull request opens."""
        ...

    def update_body(self, number: int, body: str) -> PullRequest: ...

    def review_comments(self, number: int) -> list[Comment]: ...

    def merge(self, number: int, *, approver: str, sha: str, message: str = "") -> PullRequest:
        """Merge exactly commit `sha` on a recorded human approval, or raise `MergeRefused` with
        nothing merged (a moved head, a conflict). Never reachable with an agent token."""
        ...

    def close(self, number: int) -> PullRequest: ...

    def list(self, repo: Path | None = None) -> list[PullRequest]: ...


BACKENDS: dict[str, str] = {
    "local": "corral.forge.local:LocalForge",
    "github": "corral.forge.github:GitHubForge",
}


def forge_class(name: str) -> Callable[..., Forge]:
    """The class registered for `name`, imported only now (httpx is not loaded for the local forge)."""
    if name not in BACKENDS:
        raise ConfigError(
            f"[forge] backend {name!r} is unknown", hint=f"use one of: {', '.join(sorted(BACKENDS))}"
        )
    module, _, attr = BACKENDS[name].partition(":")
    cls: Callable[..., Forge] = getattr(import_module(module), attr)
    return cls
