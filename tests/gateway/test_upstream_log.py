"""A stdio upstream's stderr log is an exit too: a server that prints its credential (raw or base64,
one character per write) leaves only `[secret:NAME]` in corral's log file of it."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral.gateway.config import GatewayFileConfig, UpstreamConfig
from corral.gateway.run import RunGateway, RunGatewaySpec
from tests.gateway.conftest import HERE, MemorySink, mcp_client

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

TOKEN = "up-cred>>>???~~~/+t"


async def test_an_upstream_printing_its_credential_to_stderr_logs_it_redacted(
    sock: Path, sink: MemorySink, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    upstream = UpstreamConfig(
        command=sys.executable,
        args=[str(HERE / "probe_server.py"), "stdio"],
        env={"PROBE_TOKEN": "${secret:PROBE_KEY}"},
    )
    spec = RunGatewaySpec(
        "run-log1",
        ["probe.stderr"],
        sock,
        config=GatewayFileConfig(upstreams={"probe": upstream}),
        secret_refs={"PROBE_KEY": "env:CORRAL_TEST_PROBE_KEY"},
        environ={"CORRAL_TEST_PROBE_KEY": TOKEN},
        log_dir=tmp_path / "logs",
    )
    handle = RunGateway.start(spec, sink)
    try:
        async with mcp_client(handle.socket_path, handle.token) as client:
            result = await client.call_tool("probe_stderr", {"name": "PROBE_TOKEN"})
        assert result.content[0].text == "printed"
    finally:
        handle.stop()
    log = tmp_path / "logs" / "upstream-probe.log"
    deadline = time.monotonic() + 20
    while "b64=[secret:PROBE_KEY]\n" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
        time.sleep(0.05)
    text = log.read_text()
    assert "token=[secret:PROBE_KEY]\n" in text
    for form in (TOKEN, base64.b64encode(TOKEN.encode()).decode(), TOKEN[:8]):
        assert form not in text
