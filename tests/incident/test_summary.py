"""`corral incident`'s host-side fetch: the incident's summary through the gateway and the real Sentry
server, audited; a nonexistent incident is a clear error before any sandbox starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.errors import IncidentSourceError
from corral.events import GatewayCall
from corral.gateway.config import GatewayFileConfig
from corral.gateway.run import build_gateway
from corral.incident.source import parse_source
from corral.incident.summary import fetch_summary, incident_task
from tests.gateway.conftest import MemorySink
from tests.incident.conftest import TOKEN
from tests.incident.test_sentry_gateway import SENTRY_READ, sentry

pytestmark = [pytest.mark.npm, pytest.mark.timeout(120)]


def gateway(fake: Any, home: Path, sink: MemorySink) -> Any:
    config = GatewayFileConfig(
        upstreams={"sentry": sentry(fake, home)}, annotations={f"sentry.{t}": "read" for t in SENTRY_READ}
    )
    return build_gateway(
        config,
        secret_refs={"INCIDENT_TOKEN": "env:T"},
        sink=sink,
        environ={"T": TOKEN},
    )


def test_the_summary_comes_through_the_gateway_and_goes_into_the_task(
    fake_api: Any, tmp_path: Path, sink: MemorySink
) -> None:
    fake = fake_api("sentry")
    source = parse_source("sentry:acme/4211")
    summary = fetch_summary(gateway(fake, tmp_path, sink), source, run_id="incident-fetch")
    assert "calc/ops.py" in summary and "return a - b" in summary
    (call,) = sink.of(GatewayCall)
    assert (call.tool_name, call.access, call.outcome) == ("sentry.get_sentry_resource", "read", "ok")
    task = incident_task(source, summary)
    assert task.startswith("Investigate the production incident sentry:acme/4211")
    assert summary in task


def test_a_nonexistent_issue_is_a_clear_error(fake_api: Any, tmp_path: Path, sink: MemorySink) -> None:
    fake = fake_api("sentry")
    with pytest.raises(IncidentSourceError) as info:
        fetch_summary(gateway(fake, tmp_path, sink), parse_source("sentry:acme/999"), run_id="incident-fetch")
    assert "sentry:acme/999" in str(info.value) and "404" in str(info.value)
    assert [c.outcome for c in sink.of(GatewayCall)] == ["error"]
