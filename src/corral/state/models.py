"""Typed records the state store hands out: frozen pydantic models, never ORM objects with sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from corral.state.machine import Phase


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProjectRecord(Record):
    id: int
    team: str
    name: str
    repo: str
    image: str
    config_snapshot: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class RunRecord(Record):
    run_id: str
    team: str
    project: str
    task: str
    repo: str
    base_commit: str
    branch: str
    phase: Phase
    version: int
    """Bumped by every phase change; what optimistic concurrency compares."""
    failure_reason: str
    model: str
    small_model: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cost_usd: float
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    checks: dict[str, Any] | None
    checks_passed: bool | None
    result: dict[str, Any] | None
    diffstat: str
    container_id: str
    pid: int | None
    preference_ids: list[int]
    meta: dict[str, Any]
    requester: str = ""
    """Who asked for the run (`corral.identity.current_user()` at creation); may not approve it."""

    @property
    def elapsed_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or self.updated_at
        return (end - self.started_at).total_seconds()


class PhaseChange(Record):
    run_id: str
    from_phase: Phase
    to_phase: Phase
    reason: str
    at: datetime


Decision = Literal["approved", "rejected"]
Subject = Literal["run", "merge", "deploy_promotion"]


class ApprovalRecord(Record):
    id: int
    team: str
    project: str
    run_id: str
    actor: str
    decision: Decision
    subject: Subject
    comment: str
    decided_at: datetime
    head_sha: str = ""
    """The run's head commit the decision was given for: a merge happens at exactly this commit."""
    override: bool = False
    """Approved over failed checks (`corral approve --override`)."""


class ModelPin(Record):
    id: int
    team: str
    project: str
    model: str
    small_model: str
    claude_code: str
    tool_surface_hash: str
    pinned_by: str
    reason: str
    pinned_at: datetime


class RegressionRecord(Record):
    """One `corral regress` suite's summary: what `corral model promote` requires a fresh pass of."""

    id: int
    team: str
    project: str
    candidate: str
    baseline: str
    verdict: Literal["pass", "fail", "inconclusive", "empty"]
    partial: bool
    tasks: int
    epochs: int
    summary: dict[str, Any]
    report_path: str
    created_by: str
    created_at: datetime


class TokenRecord(Record):
    """A capability token as stored: only the sha256 of its secret, never the secret."""

    token_id: str
    team: str
    project: str
    run_id: str
    secret_hash: str
    scope: list[str]
    created_at: datetime
    expires_at: datetime
    max_uses: int | None
    uses: int
    revoked_at: datetime | None
    revoked_reason: str


PreferenceSource = Literal["rejection", "manual", "review"]


class Preference(Record):
    id: int
    team: str
    project: str
    rule: str
    scope_glob: str | None
    source_kind: PreferenceSource
    source_ref: str
    """Where it came from: `approval:<id>`, `audit:<run_id>/<seq>`, a review-comment URL, or empty."""
    run_id: str | None
    confidence: float
    created_by: str
    created_at: datetime
    valid_from: datetime
    valid_to: datetime | None
    superseded_by: int | None
    retired_at: datetime | None

    def is_active(self, now: datetime) -> bool:
        return (
            self.retired_at is None
            and self.superseded_by is None
            and self.valid_from <= now
            and (self.valid_to is None or self.valid_to > now)
        )


class StoreInfo(Record):
    """What `corral doctor` shows about the state store."""

    backend: Literal["sqlite", "postgresql"]
    url: str
    """The URL with any password masked."""
    team: str
    revision: str | None
    head: str
