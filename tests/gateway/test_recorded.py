"""Replay's gateway: a tool that acts answers from the recording (no second pull request), a
read-only tool still runs for real, and a call the recording does not have is an error."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from corral.events import PrOpened
from corral.forge.local import LocalForge
from corral.gateway.recorded import serve_recorded
from corral.gateway.run import RunGateway, RunGatewaySpec
from tests.gateway.conftest import MemorySink, mcp_client

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

RECORDED = json.dumps({"number": 41, "url": "local://pr/41", "head": "corral/run-1"})


async def test_write_tools_answer_from_the_recording_and_reads_run(
    sock: Path, sink: MemorySink, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    forge = LocalForge(tmp_path / "forge")
    spec = RunGatewaySpec(
        "run-1", ["forge.*"], sock, forge=forge, repo=repo, head="corral/run-1"
    )  # fmt: skip
    handle = RunGateway.start(spec, sink)
    try:
        wrapped = serve_recorded(handle.gateway, [("mcp__corral__forge_open_pull_request", RECORDED, False)])
        assert wrapped >= 2  # open_pull_request and comment act; list_checks only reads
        async with mcp_client(handle.socket_path, handle.token) as client:
            opened = await client.call_tool("forge_open_pull_request", {"title": "Fix", "body": "b"})
            again = await client.call_tool("forge_open_pull_request", {"title": "Fix", "body": "b"})
            checks = await client.call_tool("forge_list_checks", {"number": 41})
    finally:
        handle.stop()
    assert not opened.is_error and json.loads(opened.content[0].text)["number"] == 41
    assert again.is_error and "no result for another call" in again.content[0].text
    assert forge.list() == [] and sink.of(PrOpened) == []  # nothing was opened for real
    # The read-only tool reached the real forge, which has no pull request 41.
    assert checks.is_error and "41" in checks.content[0].text
