"""The evidence an incident run read: its read-class calls of incident upstreams, as audited.

The run's result carries the list (`result["evidence"]`), so whatever presents the run (the summary,
and the pull request body once delivery lands) can link what the agent read: events, traces, log
queries, each with the arguments' hash that ties it to the audit chain.
"""

from __future__ import annotations

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
