"""The audit log: append-only, hash-chained, spooled durably before a tool runs.

The contract every emitter uses is `EventSink`: components receive a sink for their run and call
`emit`. The sink fills `run_id`, `seq`, `ts`, the hash chain, and redacts known secret values before
anything is persisted. `durable=True` returns only once the event is fsynced to the spool: the
PreToolUse path uses it so that every tool call is on disk before the tool runs.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from corral.events import Event

E = TypeVar("E", bound=Event)


class EventSink(Protocol):
    def emit(self, event: E, *, durable: bool = False) -> E:
        """Append `event` to this run's chain and return it with run_id, seq and hashes filled."""
        ...

    def register_secret(self, name: str, value: str) -> None:
        """Redact `value` (and its base64 and URL-encoded forms) as `[secret:NAME]` from now on."""
        ...


class RunTap(Protocol):
    """Sees each event of one run as stored (chain fields filled, secrets redacted), in chain order.

    Called under the chain lock, so it must only hand the payload on (`corral.telemetry` queues it)."""

    def event(self, payload: dict[str, Any]) -> None: ...

    def closed(self) -> None: ...
