"""The evidence an incident run read: its read-class calls of incident upstreams, as audited.

The run's result carries the list (`result["evidence"]`) and the incident (`result["incident"]`), so
whatever presents the run (the summary, the pull request) can link the incident and what the agent
read: events, traces, log queries, each with its audit seq and the arguments' hash that tie it to the
chain.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from corral.events import Event, GatewayCall
from corral.incident.source import INCIDENT_UPSTREAMS


def is_incident_read(event: Event) -> bool:
    return (
        isinstance(event, GatewayCall)
        and event.access == "read"
        and event.tool_name.split(".", 1)[0] in INCIDENT_UPSTREAMS
    )


class Evidence(BaseModel):
    seq: int
    tool: str
    arguments: dict[str, Any]
    arguments_hash: str
    outcome: str


class EvidenceCollector:
    """An audit observer (`ObservedSink`): keeps each incident read as it is stored."""

    def __init__(self) -> None:
        self.items: list[Evidence] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, GatewayCall) and is_incident_read(event):
            self.items.append(
                Evidence(
                    seq=event.seq,
                    tool=event.tool_name,
                    arguments=event.arguments,
                    arguments_hash=event.arguments_hash,
                    outcome=event.outcome,
                )
            )

    def as_result(self) -> list[dict[str, Any]]:
        return [item.model_dump(mode="json") for item in self.items]


MAX_LISTED = 30
"""Evidence items a pull request lists; the rest are counted and left to `corral audit show`."""
_MAX_ARGUMENTS = 160


def incident_section(result: dict[str, Any], run_id: str) -> list[str]:
    """The pull request's lines for an incident run: the incident's link and the evidence read.

    The arguments are the agent's (hostile): they go in as compact, ASCII-only JSON inside inline code,
    with backticks replaced so nothing can close the span, and truncated, so the list stays bounded."""
    incident = result.get("incident")
    if not isinstance(incident, dict):
        return []
    ref = str(incident.get("ref", ""))
    url = str(incident.get("url", ""))
    if any(c in url for c in " ()[]<>`\n"):
        url = ""
    lines = [f"**Incident:** [{ref}]({url})" if url else f"**Incident:** `{ref}`"]
    items = [Evidence.model_validate(item) for item in result.get("evidence") or []]
    if not items:
        return [*lines, "**Evidence read:** none (the agent read nothing from the incident's upstream)"]
    lines.append(f"**Evidence read ({len(items)}):**")
    for item in items[:MAX_LISTED]:
        arguments = json.dumps(item.arguments, sort_keys=True, separators=(",", ":")).replace("`", "'")
        if len(arguments) > _MAX_ARGUMENTS:
            arguments = arguments[: _MAX_ARGUMENTS - 1] + "…"
        tool = item.tool.replace("`", "'")
        lines.append(f"- `{tool}` `{arguments}` ({item.outcome}, audit seq {item.seq})")
    if len(items) > MAX_LISTED:
        lines.append(f"- … and {len(items) - MAX_LISTED} more: `corral audit show {run_id}`")
    return lines
