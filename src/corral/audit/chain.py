"""The hash chain: canonical JSON, per-run genesis, event hashes, and the records a store holds.

`hash = sha256(prev_hash + canonical)`, where `canonical` is the RFC 8785 JSON of the event payload
(by alias) without its `hash` field, and `prev_hash` is the previous event's hash as hex text, or the
run's genesis hash for the first event. Any edit changes the event's own hash; any deletion, insertion
or reordering breaks a `prev_hash` link or the `seq` sequence.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import rfc8785
from pydantic import BaseModel, ConfigDict, Field

CHECKPOINT_KIND = "audit.checkpoint"


def genesis_hash(run_id: str) -> str:
    return hashlib.sha256(f"corral-genesis:{run_id}".encode()).hexdigest()


def canonical(payload: dict[str, Any]) -> bytes:
    """RFC 8785 canonical JSON of `payload` without its `hash` field."""
    body = {k: v for k, v in payload.items() if k != "hash"}
    return rfc8785.dumps(body)


def chain_hash(prev_hash: str, canonical_json: bytes) -> str:
    h = hashlib.sha256(prev_hash.encode())
    h.update(canonical_json)
    return h.hexdigest()


def event_hash(payload: dict[str, Any]) -> str:
    """The hash `payload` should carry, given its own `prev_hash`."""
    return chain_hash(str(payload.get("prev_hash", "")), canonical(payload))


def dumps_line(payload: dict[str, Any]) -> str:
    """The stored text of one record: compact JSON (not canonical; the hash is recomputed on read)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class EventRow:
    """One event as a store holds it: index fields plus the stored JSON text of the payload.

    The index fields are what a store orders and de-duplicates by; `data` is the truth that the chain
    covers. Verification re-reads `seq` and `hash` from `data`, so editing an index column is caught.
    """

    run_id: str
    seq: int
    kind: str
    ts: str
    hash: str
    data: str

    @classmethod
    def from_payload(cls, payload: dict[str, Any], data: str | None = None) -> EventRow:
        return cls(
            run_id=str(payload["run_id"]),
            seq=int(payload["seq"]),
            kind=str(payload["kind"]),
            ts=str(payload.get("ts", "")),
            hash=str(payload.get("hash", "")),
            data=data if data is not None else dumps_line(payload),
        )

    def payload(self) -> dict[str, Any]:
        value = json.loads(self.data)
        if not isinstance(value, dict):
            raise ValueError(f"event {self.run_id}#{self.seq} is not a JSON object")
        return value


class Checkpoint(BaseModel):
    """The chain head at one moment: every N events and when a recorder closes.

    A store-level record, not an event: it is not itself chained, and lives in its own table or
    collection. `reason` is `interval`, `close` (a recorder closed cleanly) or `recovered` (a later
    process shipped the spool of one that died).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["audit.checkpoint"] = "audit.checkpoint"
    run_id: str
    seq: int
    hash: str
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC))
    reason: Literal["interval", "close", "recovered"] = "interval"

    def line(self) -> str:
        return self.model_dump_json()
