"""Sentry's official MCP server (@sentry/mcp-server, pinned in .ci/services.sh) through the gateway,
against the loopback HTTPS fake of Sentry's API: read tools allowed, write tools denied before they
reach Sentry, every call audited with its arguments' hash."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.events import GatewayCall, GatewayDecision
from corral.forge.local import LocalForge
from corral.gateway.config import GatewayFileConfig, UpstreamConfig
from corral.gateway.run import RunGateway, RunGatewayHandle, RunGatewaySpec
from corral.incident.fakes import FakeApi, make_tls
from tests.gateway.conftest import MemorySink, mcp_client, npm_dir

pytestmark = [pytest.mark.npm, pytest.mark.anyio, pytest.mark.timeout(120)]
FIXTURES = Path(__file__).parent / "fixtures"
SENTRY_READ = (
    "find_organizations",
    "find_projects",
    "search_events",
    "search_issues",
    "get_sentry_resource",
    "search_sentry_tools",
)
SENTRY_WRITE = ("update_issue", "analyze_issue_with_seer", "execute_sentry_tool")


def sentry_entry() -> Path:
    entry = npm_dir() / "node_modules/@sentry/mcp-server/dist/index.js"
    if not entry.is_file():
        pytest.fail(f"{entry} is missing: run `source .ci/services.sh && install_npm_mcp`")
    return entry


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeApi]:
    fixtures = json.loads((FIXTURES / "sentry.json").read_text(encoding="utf-8"))
    api = FakeApi(fixtures, make_tls(tmp_path / "tls")).start()
    yield api
    api.stop()


@pytest.fixture
def gateway(fake: FakeApi, sock: Path, sink: MemorySink, tmp_path: Path) -> Iterator[RunGatewayHandle]:
    upstream = UpstreamConfig(
        command="node",
        args=[str(sentry_entry()), f"--host={fake.host}"],
        env={
            "SENTRY_ACCESS_TOKEN": "${secret:SENTRY_TOKEN}",
            "NODE_EXTRA_CA_CERTS": str(fake.tls.ca_pem),
            "HOME": str(tmp_path),
        },
        timeout_seconds=20.0,
    )
    config = GatewayFileConfig(
        upstreams={"sentry": upstream},
        annotations={f"sentry.{t}": "read" for t in SENTRY_READ},
    )
    spec = RunGatewaySpec(
        "run-inc",
        ["sentry.*:read"],
        sock,
        config=config,
        secret_refs={"SENTRY_TOKEN": "env:CORRAL_TEST_SENTRY_TOKEN"},
        environ={"CORRAL_TEST_SENTRY_TOKEN": "sntrys-canary-41c2"},
        forge=LocalForge(tmp_path / "forge"),
    )
    handle = RunGateway.start(spec, sink)
    yield handle
    handle.stop()


async def test_read_allowed_write_denied_all_audited(
    gateway: RunGatewayHandle, fake: FakeApi, sink: MemorySink
) -> None:
    async with mcp_client(gateway.socket_path, gateway.token) as client:
        listed = {t.name for t in (await client.list_tools()).tools}
        read = await client.call_tool(
            "sentry_get_sentry_resource",
            {"url": f"https://{fake.host}/organizations/acme/issues/4211/"},
        )
        write = await client.call_tool(
            "sentry_update_issue", {"organizationSlug": "acme", "issueId": "4211", "status": "resolved"}
        )
    assert "calc/ops.py" in read.content[0].text, fake.requests
    assert listed == {f"sentry_{t}" for t in SENTRY_READ}
    assert write.is_error
    decisions = sink.of(GatewayDecision)
    calls = sink.of(GatewayCall)
    assert [(d.tool_name, d.allowed) for d in decisions] == [
        ("sentry.get_sentry_resource", True),
        ("sentry.update_issue", False),
    ]
    assert [c.outcome for c in calls] == ["ok", "denied"]
    assert calls[0].arguments_hash == decisions[0].arguments_hash
    assert all(len(c.arguments_hash) == 64 for c in calls)
    assert not any(r.startswith("PUT") for r in fake.requests)
