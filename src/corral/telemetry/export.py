"""The trace pipeline of one process: recorder taps → a bounded queue → spans → OTLP, off the run's path.

A run never waits for, nor fails by, its telemetry. A recorder's tap only puts the stored event on a
bounded queue (a full queue drops the event and counts it); one worker thread parses the events and
builds the spans (`corral.telemetry.spans`); the SDK's batch processor ships them from its own thread
with the standard OTLP exporter, configured by the standard variables (endpoint, headers, timeout,
protocol, service name). An export that fails is reported once, as a warning, and dropped. Closing
waits a bounded time for what is queued, then gives up on it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from corral.events import parse_event
from corral.telemetry import ENDPOINT_VARS
from corral.telemetry.ids import RunIds
from corral.telemetry.spans import RunTrace

log = logging.getLogger("corral.telemetry")

QUEUE_EVENTS = 8192
"""Events waiting to become spans; past this, events are dropped (and counted), never waited for."""
CLOSE_SECONDS = 3.0
"""How long closing waits for queued spans to be exported before it drops them."""

ABORT_SECONDS = 1.0
"""How long closing then waits for an export it aborted to return."""

_STOP = object()


def _where(environ: Mapping[str, str]) -> str:
    """The endpoint as a warning may name it: scheme, host and port (no credentials, no path)."""
    for name in ENDPOINT_VARS:
        raw = environ.get(name, "").strip()
        if raw:
            parts = urlsplit(raw)
            return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
    return "(no endpoint)"


class WarnOnce:
    """A warning said once per process pipeline: a dead collector must not flood the terminal."""

    def __init__(self) -> None:
        self._said = False
        self._lock = threading.Lock()

    def warn(self, message: str, *args: object) -> None:
        with self._lock:
            if self._said:
                return
            self._said = True
        log.warning(message, *args)


class GuardedExporter(SpanExporter):
    """The OTLP exporter, counting what it shipped and reporting its first failure once."""

    def __init__(self, inner: SpanExporter, where: str, once: WarnOnce) -> None:
        self.inner = inner
        self.where = where
        self.once = once
        self.exported = 0
        self.failed = 0
        self._aborted = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        detail = ""
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # an exporter bug or a transport error must not reach a run
            result, detail = SpanExportResult.FAILURE, f": {type(exc).__name__}"
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.failed += len(spans)
            self.once.warn(
                "corral: OpenTelemetry export to %s failed%s; runs go on, and their spans are dropped "
                "until it answers (docs/observability.md)",
                self.where,
                detail,
            )
        return result

    def shutdown(self) -> None:
        if not self._aborted:
            self.inner.shutdown()

    def abort(self) -> None:
        """Stop the retries of an export under way (a collector that does not answer)."""
        self._aborted = True
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _protocol(environ: Mapping[str, str]) -> str:
    raw = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    return (raw or "http/protobuf").strip().lower()


def _otlp_exporter(protocol: str) -> SpanExporter | str:
    """The standard exporter for `protocol` (it reads the endpoint, headers and timeout itself), or
    why there is none."""
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError:
            return "OTLP over gRPC needs `pip install opentelemetry-exporter-otlp-proto-grpc`"
        grpc: SpanExporter = GrpcSpanExporter()
        return grpc
    return f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: use http/protobuf or grpc"


def _resource() -> Resource:
    from importlib.metadata import PackageNotFoundError, version

    try:
        corral_version = version("corral")
    except PackageNotFoundError:
        corral_version = "unknown"
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; without either, "corral".
    detected = Resource.create({"service.version": corral_version})
    if str(detected.attributes.get("service.name", "")).startswith("unknown_service"):
        detected = detected.merge(Resource({"service.name": "corral"}))
    return detected


@dataclass
class _Item:
    trace: RunTrace
    payload: dict[str, Any] | None
    """A stored event's JSON form; None: the recorder closed."""


class RunTap:
    """What one run's recorder tells the pipeline: each stored event, then that it closed."""

    def __init__(self, export: TraceExport, trace: RunTrace) -> None:
        self._export = export
        self._trace = trace

    def event(self, payload: dict[str, Any]) -> None:
        self._export.put(_Item(self._trace, payload))

    def closed(self) -> None:
        self._export.put(_Item(self._trace, None))


class TraceExport:
    def __init__(
        self, exporter: GuardedExporter, once: WarnOnce, *, queue_events: int = QUEUE_EVENTS
    ) -> None:
        self.exporter = exporter
        self.ids = RunIds()
        self.provider = TracerProvider(resource=_resource(), id_generator=self.ids, shutdown_on_exit=False)
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("corral")
        self.dropped = 0
        self._once = once
        self._queue: queue.Queue[_Item | object] = queue.Queue(maxsize=queue_events)
        self._worker = threading.Thread(target=self._work, name="corral-otel", daemon=True)
        self._worker.start()
        self._closed = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TraceExport | None:
        once = WarnOnce()
        # corral says itself, once, that an export failed; the SDK would log every failed batch.
        logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.CRITICAL)
        logging.getLogger("opentelemetry.sdk").setLevel(logging.CRITICAL)
        exporter = _otlp_exporter(_protocol(environ))
        if isinstance(exporter, str):
            once.warn("corral: no OpenTelemetry export: %s", exporter)
            return None
        return cls(GuardedExporter(exporter, _where(environ), once), once)

    def tap(self, run_id: str, team: str = "") -> RunTap:
        return RunTap(self, RunTrace(self.tracer, self.ids, run_id, team))

    def put(self, item: _Item) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            self._once.warn("corral: the OpenTelemetry queue is full; events are dropped from traces")

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, _Item)
            try:
                if item.payload is None:
                    item.trace.finish()
                else:
                    item.trace.apply(parse_event(item.payload))
            except Exception as exc:  # a span that cannot be built costs the trace, never the run
                self._once.warn("corral: an audit event could not become a span: %s", type(exc).__name__)

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Build what is queued, export it within about `timeout`, and stop; what is left is dropped."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        self._worker.join(timeout)
        # The SDK's flush ignores its timeout and its exporter retries a dead collector for up to
        # OTEL_EXPORTER_OTLP_TIMEOUT: flush on a thread of its own, and past `timeout` stop the
        # exporter's retries and leave that thread to end with the process.
        flusher = threading.Thread(target=self.provider.shutdown, name="corral-otel-flush", daemon=True)
        flusher.start()
        flusher.join(timeout)
        if flusher.is_alive():
            self.exporter.abort()
            # An aborted retry returns at once, and says why once: let it, before the process goes on
            # (an export stuck in a request to a collector that never answers is not waited for).
            flusher.join(ABORT_SECONDS)
