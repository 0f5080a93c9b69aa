"""The real Claude Code CLI (bundled with claude-agent-sdk) driving the gateway, on the host.

It is the sandbox's path without the container. The scripted model goes through the model proxy, and
the gateway's run socket is bridged to a loopback port by socat, as inside the sandbox. Claude Code
gets the run's `--mcp-config`, with `--strict-mcp-config` and the token's tools as its allowedTools.
The full test in a sandbox is wired by the run lifecycle.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from corral.events import GatewayCall, GatewayDecision, ModelRequest
from corral.forge.local import LocalForge
from corral.gateway.run import RunGateway, RunGatewaySpec
from corral.model.playbook import Playbook
from corral.model.proxy import ModelProxy, Upstream
from tests.gateway.conftest import MemorySink, free_port

PINNED = "claude-sonnet-4-5-20250929"
SMALL = "claude-haiku-4-5-20251001"
MODEL_TOKEN = "corral-run-placeholder-gw-5e2a"

PLAYBOOK = """
turns:
  - tool_use:
      - {name: mcp__corral__forge_open_pull_request, input: {title: "Fix the adder", body: "via gateway"}}
  - tool_use: [{name: mcp__corral__forge_merge_pull_request, input: {number: 1}}]
  - text: opened, could not merge
"""


def claude_binary() -> Path:
    import claude_agent_sdk

    path = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
    if not path.is_file():
        pytest.fail(f"the bundled Claude Code CLI is missing at {path}: reinstall claude-agent-sdk")
    return path


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@pytest.mark.timeout(180)
def test_claude_code_opens_a_pr_through_the_gateway_and_cannot_merge(sock: Path, tmp_path: Path) -> None:
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (apt-get install socat)")
    workspace, home = tmp_path / "ws", tmp_path / "home"
    home.mkdir()
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    sink = MemorySink()
    forge = LocalForge(tmp_path / "forge")
    spec = RunGatewaySpec(
        "run-cc", ["forge.open_pull_request", "forge.list_checks"], sock,
        forge=forge, repo=workspace, head="corral/run-cc",
    )  # fmt: skip
    handle = RunGateway.start(spec, sink)
    scripted = Upstream.scripted(Playbook.from_text(PLAYBOOK), str(workspace))
    proxy = ModelProxy(MODEL_TOKEN, {PINNED, SMALL}, scripted, sink)
    port = free_port()
    bridge = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", f"UNIX-CONNECT:{sock}"]
    )
    try:
        model_port = proxy.serve_tcp()
        wait_port(port)
        mcp_config = tmp_path / "mcp.json"
        mcp_config.write_text(json.dumps(handle.mcp_config(f"http://127.0.0.1:{port}/mcp")))
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{model_port}", "ANTHROPIC_API_KEY": MODEL_TOKEN,
            "ANTHROPIC_SMALL_FAST_MODEL": SMALL, "ANTHROPIC_DEFAULT_HAIKU_MODEL": SMALL,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
        }  # fmt: skip
        allowed = handle.allowed_tool_names()
        assert allowed == ["mcp__corral__forge_list_checks", "mcp__corral__forge_open_pull_request"]
        command = [
            str(claude_binary()), "-p", "open a PR", "--output-format", "stream-json", "--verbose",
            "--model", PINNED, "--max-turns", "6", "--mcp-config", str(mcp_config), "--strict-mcp-config",
            "--allowedTools", ",".join(allowed),
        ]  # fmt: skip
        done = subprocess.run(command, env=env, cwd=workspace, capture_output=True, text=True, timeout=150)
    finally:
        bridge.terminate()
        bridge.wait(10)
        proxy.stop()
        handle.stop()
    lines: list[dict[str, Any]] = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    assert done.returncode == 0, done.stderr[-2000:]
    results = [line for line in lines if line.get("type") == "result"]
    assert results and results[-1]["result"] == "opened, could not merge"

    # The granted tool went through the gateway: decided, audited, and the PR exists on the run's branch.
    (pr,) = forge.list(workspace)
    assert (pr.title, pr.head, pr.state, pr.author) == (
        "Fix the adder",
        "corral/run-cc",
        "open",
        "agent:run-cc",
    )
    decisions, calls = sink.of(GatewayDecision), sink.of(GatewayCall)
    assert [(d.tool_name, d.allowed) for d in decisions] == [("forge.open_pull_request", True)]
    assert [(c.tool_name, c.outcome) for c in calls] == [("forge.open_pull_request", "ok")]
    # The merge tool is not in this token's tools/list, so Claude Code refuses it before any request:
    # the model reads a tool error, the PR stays open and the gateway records no merge call.
    requests = sink.of(ModelRequest)
    assert "mcp__corral__forge_merge_pull_request" in requests[2].last_user
    assert "error" in requests[2].last_user.lower()
    assert handle.token not in done.stdout + done.stderr
