"""`corral gateway check` through Typer's runner, and `corral gateway serve` as a real process on TCP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from typer.testing import CliRunner

from corral.audit.log import AuditLog
from corral.cli.gateway import app
from corral.events import GatewayCall, GatewayDecision
from corral.settings import Settings
from tests.gateway.conftest import everything_entry, free_port

runner = CliRunner()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / "home"))
    (tmp_path / "corral.toml").write_text('[gateway]\ngrants = ["forge.comment", "deploy.stage"]\n')
    return tmp_path


def test_check_prints_allowed_tools_and_argument_shapes(repo: Path) -> None:
    result = runner.invoke(
        app,
        [
            "check",
            "--repo",
            str(repo),
            "--json",
            "--token-grants",
            "forge.*",
            "--token-grants",
            'deploy.stage(target == "preview")',
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    tools = {t["tool"]: t for t in report["allowed"]}
    assert sorted(tools) == ["deploy.stage", "forge.comment", "forge.list_checks", "forge.open_pull_request"]
    assert tools["deploy.stage"]["constraints"] == ['target == "preview"']
    assert tools["deploy.stage"]["arguments"] == {"target": "string?"}
    assert tools["forge.comment"]["arguments"] == {"number": "integer", "body": "string"}
    assert tools["forge.list_checks"]["access"] == "read"
    assert tools["forge.comment"]["claude_code_name"] == "mcp__corral__forge_comment"
    assert report["never_grantable"] == ["deploy.promote", "forge.merge_pull_request"]


def test_check_defaults_to_corral_toml_grants_and_reads_the_gateway_file(repo: Path) -> None:
    (repo / "corral-gateway.toml").write_text(
        f'[upstreams.everything]\ncommand = "node"\nargs = ["{everything_entry()}", "stdio"]\n'
        '[annotations]\n"everything.echo" = "read"\n'
    )
    result = runner.invoke(app, ["check", "--repo", str(repo), "--json"])
    assert result.exit_code == 0, result.output
    assert [t["tool"] for t in json.loads(result.output)["allowed"]] == ["deploy.stage", "forge.comment"]
    result = runner.invoke(
        app, ["check", "--repo", str(repo), "--json", "--token-grants", "everything.*:read"]
    )
    assert [t["tool"] for t in json.loads(result.output)["allowed"]] == ["everything.echo"]
    text = runner.invoke(app, ["check", "--repo", str(repo), "--token-grants", "everything.echo"])
    assert text.exit_code == 0 and "everything.echo" in text.output and "message: string" in text.output


def test_check_reports_a_bad_grant_by_name(repo: Path) -> None:
    result = runner.invoke(app, ["check", "--repo", str(repo), "--token-grants", "forge.merge_pull_request"])
    assert result.exit_code == 2
    assert "forge.merge_pull_request" in result.output and "never grantable" in result.output


@pytest.mark.anyio
async def test_serve_listens_on_tcp_and_prints_a_working_token(repo: Path) -> None:
    port = free_port()
    env = {**os.environ, "CORRAL_HOME": str(repo / "home")}
    code = "from corral.cli.gateway import app; app()"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--json",
            "--repo",
            str(repo),
            "--grant",
            "forge.list_checks",
        ],
        env={**env, "PYTHONPATH": str(Path(__file__).parents[2] / "src")},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info: dict[str, Any] = json.loads(proc.stdout.readline())
        assert info["url"] == f"http://127.0.0.1:{port}/mcp"
        headers = {"Authorization": f"Bearer {info['token']}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            streamable_http_client(info["url"], http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            names = [t.name for t in (await session.list_tools()).tools]
            result = await session.call_tool("forge_list_checks", {"number": 99})
        assert names == ["forge_list_checks"]
        # A `serve` token is bound to no run, so it reaches no pull request at all.
        refusal = json.loads(result.content[0].text)
        assert result.is_error and (refusal["denied"], refusal["rule"]) == (True, "run-scope")
        assert "bound to no run" in refusal["reason"]
        async with httpx2.AsyncClient() as http:
            denied = await http.post(info["url"], json={}, headers={"Authorization": "Bearer crt_x_y"})
        assert denied.status_code == 401
        # The session's decisions and calls are on a hash-chained audit chain of their own.
        assert info["audit"].startswith("gateway-serve-")
        with AuditLog.open(Settings(home=repo / "home"), None, allow_offline=True, background=False) as log:
            kinds = [e.kind for e in log.read(info["audit"])]
            decisions = [e for e in log.read(info["audit"]) if isinstance(e, GatewayDecision)]
            calls = [e for e in log.read(info["audit"]) if isinstance(e, GatewayCall)]
        # The 401 too: a token this gateway never minted is recorded on its chain, with no id ("x" is none).
        assert [k for k in kinds if k.startswith("gateway.")] == [
            "gateway.decision",
            "gateway.call",
            "gateway.decision",
        ]
        assert (decisions[0].allowed, decisions[0].rule, calls[0].outcome) == (False, "run-scope", "denied")
        assert (decisions[1].allowed, decisions[1].rule, decisions[1].token_id) == (
            False,
            "token:unknown",
            "",
        )
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    with AuditLog.open(Settings(home=repo / "home"), None, allow_offline=True, background=False) as log:
        report = log.verify(info["audit"])
    assert report.ok, report.problems
