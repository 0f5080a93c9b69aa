"""OpenTelemetry traces of every run, built from its audit events (docs/observability.md).

The audit log is the one place every component reports to, so tracing subscribes there: each run's
recorder hands every stored (already redacted) event to a `RunTap`, and `corral.telemetry.export`
turns them into spans on a background thread and ships them over OTLP. Nothing here imports the
OpenTelemetry SDK: without `OTEL_EXPORTER_OTLP_ENDPOINT` (or its traces-only form) nothing is
imported, started or sent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.telemetry.export import TraceExport

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the standard OpenTelemetry variables ask for trace export."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARS)


def open_export(environ: Mapping[str, str] | None = None) -> TraceExport | None:
    """The process's trace pipeline when the environment asks for one, else None (and no import)."""
    if not enabled(environ):
        return None
    from corral.telemetry.export import TraceExport

    return TraceExport.from_env(os.environ if environ is None else environ)
