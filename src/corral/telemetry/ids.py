"""The ids of a run's trace, derived from its run id, so every process that records the run (the run
itself, a later approval, gc) puts its spans in the same trace under the same root span."""

from __future__ import annotations

import hashlib

from opentelemetry.sdk.trace.id_generator import RandomIdGenerator


def run_trace_id(run_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"corral-trace:{run_id}".encode()).digest()[:16], "big") or 1


def run_root_span_id(run_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"corral-run-span:{run_id}".encode()).digest()[:8], "big") or 1


class RunIds(RandomIdGenerator):
    """Random ids, except for the one span told to `pin` next: a run's root gets its derived ids.

    Only the exporter's worker thread starts spans, so a plain attribute is enough."""

    def __init__(self) -> None:
        self._pinned: tuple[int, int] | None = None

    def pin(self, trace_id: int, span_id: int) -> None:
        self._pinned = (trace_id, span_id)

    def generate_trace_id(self) -> int:
        if self._pinned is not None:
            return self._pinned[0]
        return super().generate_trace_id()

    def generate_span_id(self) -> int:
        if self._pinned is not None:
            span_id, self._pinned = self._pinned[1], None
            return span_id
        return super().generate_span_id()
