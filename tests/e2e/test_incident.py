"""An incident run end to end through the real sandbox: Claude Code reads the Sentry issue's stack trace
through the gateway (the official Sentry MCP server, against the HTTPS fake), fixes the file it names,
runs the tests, and waits for approval; the write tool is not even offered, and the evidence is in the
run's result and under "saw" in the audit timeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from corral.audit.timeline import timeline
from corral.delivery.pr import find_pull_request
from corral.demo import DEMO_CONFIG, DEMO_FILES
from corral.forge.local import LocalForge
from corral.gateway.config import load_gateway_file
from corral.gateway.run import build_gateway
from corral.incident.source import parse_source
from corral.incident.summary import fetch_summary, incident_task
from corral.runs import RunOrchestrator, RunRequest
from corral.services import Services
from corral.settings import Settings
from tests.e2e.conftest import make_repo, stored_run
from tests.incident.conftest import TOKEN, fake_api, npm_entry
from tests.incident.test_sentry_gateway import SENTRY_READ

__all__ = ["fake_api"]
pytestmark = [pytest.mark.docker, pytest.mark.npm]

PLAYBOOK = """\
turns:
  - tool_use: [{name: mcp__corral__sentry_get_sentry_resource,
                input: {resourceType: issue, resourceId: "4211", organizationSlug: acme}}]
  - tool_use: [{name: mcp__corral__sentry_update_issue,
                input: {organizationSlug: acme, issueId: "4211", status: resolved}}]
  - tool_use: [{name: Read, input: {file_path: "{workspace}/calc/ops.py"}}]
  - tool_use: [{name: Edit, input: {file_path: "{workspace}/calc/ops.py", old_string: "return a - b",
                new_string: "return a + b"}}]
  - tool_use: [{name: Bash, input: {command: "cd {workspace} && python3 -m pytest -q"}}]
  - text: "The Sentry stack trace points at calc/ops.py:5 (`return a - b`); add now adds, tests pass."
"""


def test_incident_run_reads_the_trace_fixes_the_file_and_waits_for_approval(
    agent_image: str, fake_api: Any, tmp_path: Path, write_playbook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_api("sentry")
    entry = npm_entry("@sentry/mcp-server/dist/index.js")
    annotations = "".join(f'"sentry.{t}" = "read"\n' for t in SENTRY_READ)
    gateway_file = (
        f'[upstreams.sentry]\ncommand = "node"\nargs = ["{entry}", "--host={fake.host}"]\n'
        f'env = {{ SENTRY_ACCESS_TOKEN = "${{secret:SENTRY_TOKEN}}",'
        f' NODE_EXTRA_CA_CERTS = "{fake.tls.ca_pem}", HOME = "{tmp_path}" }}\n[annotations]\n{annotations}'
    )
    config = DEMO_CONFIG + '\n[secrets]\nSENTRY_TOKEN = "env:CORRAL_T_SENTRY"\n'
    repo = make_repo(tmp_path / "demo", {**DEMO_FILES, "corral-gateway.toml": gateway_file}, config)
    monkeypatch.setenv("CORRAL_T_SENTRY", TOKEN)
    source = parse_source("sentry:acme/4211")
    host_gateway = build_gateway(
        load_gateway_file(repo / "corral-gateway.toml"),
        secret_refs={"SENTRY_TOKEN": "env:CORRAL_T_SENTRY"},
        sink=None,
        environ=dict(os.environ),
    )
    summary = fetch_summary(host_gateway, source, run_id="incident-fetch-e2e")
    settings = Settings()
    services = Services(settings)
    try:
        request = RunRequest(
            task=incident_task(source, summary), repo=repo, playbook=write_playbook(PLAYBOOK), incident=source
        )
        run_id = RunOrchestrator(services).run(request)
    finally:
        services.close()
    result = stored_run(settings, run_id)
    assert result.record.phase == "awaiting_approval", result.record.failure_reason
    assert "calc/ops.py" in result.record.task
    calls = result.of("gateway.call")
    assert [(c.tool_name, c.access, c.outcome) for c in calls] == [
        ("sentry.get_sentry_resource", "read", "ok")
    ]
    denied = [d for d in result.of("tool.denied") if d.tool_name == "mcp__corral__sentry_update_issue"]
    assert [d.rule for d in denied] == ["not-offered"]
    assert result.record.checks_passed is True and "calc/ops.py" in result.record.diffstat
    evidence = (result.record.result or {}).get("evidence")
    assert evidence and [e["tool"] for e in evidence] == ["sentry.get_sentry_resource"]
    assert evidence[0]["arguments_hash"] == calls[0].arguments_hash
    saw = [e.summary for e in timeline(result.events) if e.section == "saw"]
    assert any("incident read sentry.get_sentry_resource" in s for s in saw)
    assert [r for r in fake.requests if not r.startswith("GET ")] == []
    pr = find_pull_request(LocalForge(settings.home / "forge"), result.record)
    assert pr is not None and pr.author == "corral"
    body = pr.body.splitlines()
    assert "**Incident:** `sentry:acme/4211`" in body and "**Evidence read (1):**" in body
    assert any(
        line.startswith("- `sentry.get_sentry_resource` ") and f"audit seq {calls[0].seq})" in line
        for line in body
    ), pr.body


def _corral(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    return subprocess.run(
        [sys.executable, "-m", "corral", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_corral_demo_incident_runs_the_whole_flow_and_audit_show_lists_the_reads_under_saw(
    agent_image: str, tmp_path: Path
) -> None:
    npm = str(npm_entry("@sentry/mcp-server/dist/index.js")).split("/node_modules/")[0]
    proc = _corral("demo", "--incident", "--dir", str(tmp_path / "sample"), "--json", CORRAL_MCP_NPM_DIR=npm)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout[proc.stdout.index('{\n  "summary"') :])["summary"]
    assert summary["phase"] == "awaiting_approval" and summary["checks_passed"] is True
    assert "sentry:acme/4211" in summary["task"] and "calc/ops.py" in summary["task"]
    assert [e["tool"] for e in summary["result"]["evidence"]] == ["sentry.get_sentry_resource"]
    shown = _corral("audit", "show", summary["run_id"], "--repo", str(tmp_path / "sample"), COLUMNS="250")
    assert shown.returncode == 0, shown.stderr
    saw = [line for line in shown.stdout.splitlines() if line.split()[2:3] == ["saw"]]
    assert any("incident read sentry.get_sentry_resource" in line for line in saw), shown.stdout


def test_corral_demo_incident_says_how_to_install_the_sentry_server(tmp_path: Path) -> None:
    proc = _corral(
        "demo", "--incident", "--dir", str(tmp_path / "s"), CORRAL_MCP_NPM_DIR=str(tmp_path / "none")
    )
    assert proc.returncode == 2
    assert "npm install --prefix" in proc.stderr and "@sentry/mcp-server@0.39.0" in proc.stderr
    assert not (tmp_path / "s").exists()  # nothing was created
