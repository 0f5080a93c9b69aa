"""A gateway upstream (an MCP server) dies in the middle of a real run's tool call: the call fails
cleanly with the gateway's `crash` result, the gateway restarts the upstream and the next call is
served, the run finishes recorded, and no upstream process outlives the run."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import make_repo, run_task
from tests.faults.conftest import assert_recorded

pytestmark = pytest.mark.docker

PROBE = Path(__file__).parents[1] / "gateway" / "probe_server.py"
PLAYBOOK = """\
turns:
  - tool_use: [{name: mcp__corral__probe_query, input: {sql: "select 1"}}]
  - tool_use: [{name: mcp__corral__probe_crash, input: {}}]
  - tool_use: [{name: mcp__corral__probe_query, input: {sql: "select 2"}}]
  - text: done
"""


def _processes(marker: str) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if marker in line and "ps -eo" not in line]


def test_an_upstream_that_dies_mid_call_fails_that_call_and_is_restarted(
    agent_image: str, docker_client: Any, tmp_path: Path, write_playbook: Any
) -> None:
    marker = f"fault-{uuid.uuid4().hex[:8]}"  # names this test's upstream processes in `ps`
    gateway_file = (
        f"[upstreams.probe]\ncommand = {json.dumps(sys.executable)}\n"
        f'args = [{json.dumps(str(PROBE))}, "stdio", "{marker}"]\n'
        '[annotations]\n"probe.query" = "read"\n"probe.crash" = "read"\n'
    )
    config = '[gateway]\ngrants = ["probe.query", "probe.crash"]\n[checks]\ncommand = "true"\n'
    repo = make_repo(tmp_path / "r", {"corral-gateway.toml": gateway_file}, config)
    result = run_task(repo, "query twice", write_playbook(PLAYBOOK))
    assert result.record.phase == "awaiting_approval", result.record.failure_reason

    calls = result.of("gateway.call")
    assert [(c.tool_name, c.outcome) for c in calls] == [
        ("probe.query", "ok"),
        ("probe.crash", "crash"),
        ("probe.query", "ok"),
    ]
    # What the agent was told: an error result naming the upstream, not a hang or a dropped session.
    crashed = [r for r in result.of("tool.result") if r.tool_name == "mcp__corral__probe_crash"]
    assert len(crashed) == 1 and crashed[0].is_error and "upstream probe died" in str(crashed[0].output)
    assert "ran select 2" in str(
        [r.output for r in result.of("tool.result") if r.tool_name == "mcp__corral__probe_query"][-1]
    )
    assert_recorded(result, docker_client)
    assert _processes(marker) == []
