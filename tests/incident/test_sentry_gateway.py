"""Sentry's official MCP server (@sentry/mcp-server, pinned in .ci/services.sh) through the gateway,
against the loopback HTTPS fake of Sentry's API: read tools allowed, write tools denied before they
reach Sentry, every call audited with its arguments' hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.audit.timeline import timeline
from corral.events import AnyEvent, GatewayCall, GatewayDecision
from corral.gateway.config import UpstreamConfig
from corral.incident.fakes import FakeApi
from tests.gateway.conftest import MemorySink, mcp_client
from tests.incident.conftest import npm_entry

pytestmark = [pytest.mark.npm, pytest.mark.anyio, pytest.mark.timeout(120)]
# The pinned 0.39.0's tools; update_issue, analyze_issue_with_seer (starts a Seer run) and the
# execute_sentry_tool meta-tool (it runs any tool by name) stay unclassed, so they are write.
SENTRY_READ = (
    "find_organizations",
    "find_projects",
    "search_events",
    "search_issues",
    "get_sentry_resource",
    "search_sentry_tools",
)


def sentry(fake: FakeApi, home: Path) -> UpstreamConfig:
    return UpstreamConfig(
        command="node",
        args=[str(npm_entry("@sentry/mcp-server/dist/index.js")), f"--host={fake.host}"],
        env={
            "SENTRY_ACCESS_TOKEN": "${secret:INCIDENT_TOKEN}",
            "NODE_EXTRA_CA_CERTS": str(fake.tls.ca_pem),
            "HOME": str(home),
        },
        timeout_seconds=20.0,
    )


async def test_read_allowed_write_denied_all_audited(
    incident_gateway: Any, fake_api: Any, sink: MemorySink, tmp_path: Path
) -> None:
    fake = fake_api("sentry")
    gateway = incident_gateway("sentry", sentry(fake, tmp_path), SENTRY_READ)
    async with mcp_client(gateway.socket_path, gateway.token) as client:
        listed = {t.name for t in (await client.list_tools()).tools}
        read = await client.call_tool(
            "sentry_get_sentry_resource",
            {"url": f"https://{fake.host}/organizations/acme/issues/4211/"},
        )
        for tool, args in [
            ("sentry_update_issue", {"organizationSlug": "acme", "issueId": "4211", "status": "resolved"}),
            ("sentry_execute_sentry_tool", {"name": "update_issue", "arguments": {"issueId": "4211"}}),
        ]:
            assert (await client.call_tool(tool, args)).is_error
    # The stack trace came from the fake, through the real server, and names the buggy line.
    assert not read.is_error and "calc/ops.py" in read.content[0].text, fake.requests
    assert "return a - b" in read.content[0].text
    assert listed == {f"sentry_{t}" for t in SENTRY_READ}
    decisions, calls = sink.of(GatewayDecision), sink.of(GatewayCall)
    assert [(d.tool_name, d.allowed) for d in decisions] == [
        ("sentry.get_sentry_resource", True),
        ("sentry.update_issue", False),
        ("sentry.execute_sentry_tool", False),
    ]
    assert [c.outcome for c in calls] == ["ok", "denied", "denied"]
    assert [c.arguments_hash for c in calls] == [d.arguments_hash for d in decisions]
    assert all(len(c.arguments_hash) == 64 for c in calls)
    assert [r for r in fake.requests if not r.startswith("GET ")] == []  # no write reached Sentry
    # The audit timeline lists the incident read under "saw"; the refused writes stay under "did".
    assert [c.access for c in calls] == ["read", "write", "write"]
    events: list[AnyEvent] = list(sink.of(GatewayCall))
    assert [(e.section, e.summary.split("(")[0]) for e in timeline(events)] == [
        ("saw", "incident read sentry.get_sentry_resource"),
        ("did", "gateway sentry.update_issue: denied"),
        ("did", "gateway sentry.execute_sentry_tool: denied"),
    ]


async def test_an_unreachable_sentry_gives_the_agent_an_error_naming_the_read_and_is_audited(
    incident_gateway: Any, fake_api: Any, sink: MemorySink, tmp_path: Path
) -> None:
    fake = fake_api("sentry")
    gateway = incident_gateway("sentry", sentry(fake, tmp_path), SENTRY_READ)
    fake.stop()  # Sentry goes away mid-incident: the server is up, its API is not
    async with mcp_client(gateway.socket_path, gateway.token) as client:
        result = await client.call_tool(
            "sentry_get_sentry_resource", {"url": "https://acme.sentry.io/issues/4211/"}
        )
        # The gateway and the session are still usable afterwards.
        assert {t.name for t in (await client.list_tools()).tools} == {f"sentry_{t}" for t in SENTRY_READ}
    assert result.is_error and result.content[0].text
    (call,) = sink.of(GatewayCall)
    assert (call.tool_name, call.access, call.outcome) == ("sentry.get_sentry_resource", "read", "error")
    events: list[AnyEvent] = [call]
    (entry,) = timeline(events)
    assert entry.section == "saw" and entry.summary.endswith(": error")
