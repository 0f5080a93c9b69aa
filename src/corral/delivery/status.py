"""Where a run's result went after the sandbox: its pull request, who decided what at which commit, the
merge, and each deployment, read from the run's audit chain and its approvals (for `corral show`)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from corral import events as ev
from corral.events import AnyEvent
from corral.state.models import ApprovalRecord, RunRecord

DeployState = Literal["staged", "promoted", "failed", "rolled_back"]


class Decision(BaseModel):
    actor: str
    decision: str
    subject: str
    head_sha: str
    override: bool
    at: datetime
    comment: str


class Deployment(BaseModel):
    deployment_id: str
    state: DeployState
    url: str = ""
    detail: str = ""


class Delivery(BaseModel):
    pull_request: int | None = None
    pull_request_url: str = ""
    decisions: list[Decision] = []
    merge_commit: str = ""
    deployments: list[Deployment] = []
    incident: str = ""


def delivery_of(record: RunRecord, events: list[AnyEvent], approvals: list[ApprovalRecord]) -> Delivery:
    """The run's delivery as recorded; every string in it may carry what an agent wrote (a URL, a
    comment), so whoever shows it escapes it (`corral.display`)."""
    found = Delivery(
        decisions=[
            Decision(
                actor=a.actor,
                decision=a.decision,
                subject=a.subject,
                head_sha=a.head_sha,
                override=a.override,
                at=a.decided_at,
                comment=a.comment,
            )
            for a in approvals
        ],
        merge_commit=str(record.meta.get("merge_commit", "")),
        incident=str(((record.result or {}).get("incident") or {}).get("ref", "")),
    )
    for event in events:
        match event:
            case ev.PrOpened():
                found.pull_request, found.pull_request_url = event.number, event.url
            case ev.MergeMade():
                found.merge_commit = event.commit
            case ev.DeployStaged():
                found.deployments.append(
                    Deployment(deployment_id=event.deployment_id, state="staged", url=event.url)
                )
            case ev.DeployPromoted():
                found.deployments.append(
                    Deployment(deployment_id=event.deployment_id, state="promoted", url=event.url)
                )
            case ev.DeployFailed():
                found.deployments.append(
                    Deployment(deployment_id=event.deployment_id, state="failed", detail=event.reason)
                )
            case ev.DeployRolledBack():
                found.deployments.append(
                    Deployment(
                        deployment_id=event.deployment_id,
                        state="rolled_back",
                        url=event.url,
                        detail=f"from {event.from_deployment_id}" if event.from_deployment_id else "",
                    )
                )
    return found


def delivery_lines(delivery: Delivery) -> list[tuple[str, str]]:
    """(label, text) rows for a terminal; the caller escapes the text."""
    rows: list[tuple[str, str]] = []
    if delivery.incident:
        rows.append(("incident", delivery.incident))
    if delivery.pull_request is not None:
        rows.append(("pr", f"#{delivery.pull_request} {delivery.pull_request_url}".rstrip()))
    for d in delivery.decisions:
        override = " (override)" if d.override else ""
        at = f" at {d.head_sha[:10]}" if d.head_sha else ""
        rows.append((d.decision, f"{d.subject} by {d.actor}{at}{override} {d.at:%Y-%m-%d %H:%M}Z"))
    if delivery.merge_commit:
        rows.append(("merged", delivery.merge_commit[:12]))
    for dep in delivery.deployments:
        rows.append((dep.state, " ".join(x for x in (dep.deployment_id, dep.url, dep.detail) if x)))
    return rows
