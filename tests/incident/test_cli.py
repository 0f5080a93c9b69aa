"""`corral incident` refuses an unknown source, or an incident the gateway cannot find, before any run or
sandbox exists; the failed fetch is in the audit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.incident.conftest import TOKEN, npm_entry
from tests.incident.test_sentry_gateway import SENTRY_READ

pytestmark = [pytest.mark.npm, pytest.mark.timeout(120)]


def corral(repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "CORRAL_HOME": str(repo / "home"), **env},
        timeout=100,
        cwd=repo,
    )


def test_an_unknown_source_is_refused_with_the_accepted_forms(tmp_path: Path) -> None:
    proc = corral(tmp_path, "incident", "pagerduty:42")
    assert proc.returncode == 2 and "unknown incident source" in proc.stderr
    assert "sentry:ORG/ISSUE_ID" in proc.stderr


def test_a_nonexistent_issue_stops_before_any_run(fake_api: Any, tmp_path: Path) -> None:
    fake = fake_api("sentry")
    entry = npm_entry("@sentry/mcp-server/dist/index.js")
    annotations = "".join(f'"sentry.{t}" = "read"\n' for t in SENTRY_READ)
    (tmp_path / "corral-gateway.toml").write_text(
        f'[upstreams.sentry]\ncommand = "node"\nargs = ["{entry}", "--host={fake.host}"]\n'
        f'env = {{ SENTRY_ACCESS_TOKEN = "${{secret:SENTRY_TOKEN}}",'
        f' NODE_EXTRA_CA_CERTS = "{fake.tls.ca_pem}", HOME = "{tmp_path}" }}\n[annotations]\n{annotations}',
        encoding="utf-8",
    )
    (tmp_path / "corral.toml").write_text(
        '[secrets]\nSENTRY_TOKEN = "env:CORRAL_T_SENTRY"\n', encoding="utf-8"
    )
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    proc = corral(tmp_path, "incident", "sentry:acme/999", "--repo", str(tmp_path), CORRAL_T_SENTRY=TOKEN)
    assert proc.returncode == 2, proc.stderr
    assert "could not read sentry:acme/999" in proc.stderr and "404" in proc.stderr
    runs = corral(tmp_path, "runs", "--json", "--repo", str(tmp_path))
    assert runs.returncode == 0 and '"run_id"' not in runs.stdout, runs.stdout
    assert TOKEN not in proc.stderr
    audit = corral(tmp_path, "audit", "show", "incident-sentry-issue-999", "--repo", str(tmp_path))
    assert audit.returncode == 0, audit.stderr
    assert "sentry.get_sentry_resource" in audit.stdout and "error" in audit.stdout
