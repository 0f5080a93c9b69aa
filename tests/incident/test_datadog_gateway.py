"""A maintained Datadog MCP server (@winor30/mcp-server-datadog, pinned in .ci/services.sh) through the
gateway, against the loopback HTTPS fake of Datadog's API: incident, log and monitor reads allowed, host
mutes and downtimes denied before they reach Datadog, every call audited with its arguments' hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.events import GatewayCall, GatewayDecision
from corral.gateway.config import UpstreamConfig
from tests.gateway.conftest import MemorySink, mcp_client
from tests.incident.conftest import npm_entry

pytestmark = [pytest.mark.npm, pytest.mark.anyio, pytest.mark.timeout(120)]
# The pinned 1.8.0's read tools; mute_host, unmute_host, schedule_downtime, cancel_downtime are write.
DATADOG_READ = (
    "list_incidents",
    "get_incident",
    "query_metrics",
    "get_logs",
    "list_traces",
    "get_monitors",
    "get_all_services",
    "list_dashboards",
    "get_dashboard",
    "list_hosts",
    "get_active_hosts_count",
    "list_downtimes",
)


def datadog(host: str, ca: Path, home: Path) -> UpstreamConfig:
    # The client builds https://{subdomain}.{site}: "127" + "0.0.1:PORT" is the loopback fake.
    subdomain, site = host.split(".", 1)
    return UpstreamConfig(
        command="node",
        args=[str(npm_entry("@winor30/mcp-server-datadog/build/index.js"))],
        env={
            "DATADOG_API_KEY": "${secret:INCIDENT_TOKEN}",
            "DATADOG_APP_KEY": "${secret:INCIDENT_TOKEN}",
            "DATADOG_SITE": site,
            "DATADOG_SUBDOMAIN": subdomain,
            "NODE_EXTRA_CA_CERTS": str(ca),
            "HOME": str(home),
        },
        timeout_seconds=20.0,
    )


async def test_read_allowed_write_denied_all_audited(
    incident_gateway: Any, fake_api: Any, sink: MemorySink, tmp_path: Path
) -> None:
    fake = fake_api("datadog")
    gateway = incident_gateway("datadog", datadog(fake.host, fake.tls.ca_pem, tmp_path), DATADOG_READ)
    async with mcp_client(gateway.socket_path, gateway.token) as client:
        listed = {t.name for t in (await client.list_tools()).tools}
        incident = await client.call_tool("datadog_get_incident", {"incidentId": "7"})
        logs = await client.call_tool(
            "datadog_get_logs",
            {"query": "service:checkout status:error", "from": 1764620000, "to": 1764625000},
        )
        monitors = await client.call_tool("datadog_get_monitors", {})
        muted = await client.call_tool("datadog_mute_host", {"hostname": "web-3", "message": "quiet"})
        downtime = await client.call_tool("datadog_schedule_downtime", {"scope": "service:checkout"})
    assert not incident.is_error and "checkout totals wrong" in incident.content[0].text, fake.requests
    assert not logs.is_error and "calc/ops.py:5" in logs.content[0].text, fake.requests
    assert not monitors.is_error and "checkout error rate" in monitors.content[0].text, fake.requests
    assert muted.is_error and downtime.is_error
    assert listed == {f"datadog_{t}" for t in DATADOG_READ}
    decisions, calls = sink.of(GatewayDecision), sink.of(GatewayCall)
    assert [(d.tool_name, d.allowed) for d in decisions] == [
        ("datadog.get_incident", True),
        ("datadog.get_logs", True),
        ("datadog.get_monitors", True),
        ("datadog.mute_host", False),
        ("datadog.schedule_downtime", False),
    ]
    assert [c.outcome for c in calls] == ["ok", "ok", "ok", "denied", "denied"]
    assert [c.arguments_hash for c in calls] == [d.arguments_hash for d in decisions]
    assert fake.requests == [
        "GET /api/v2/incidents/7",
        "POST /api/v2/logs/events/search",
        "GET /api/v1/monitor",
    ]
