"""`corral gateway check` shows what an incident run may call, with docs/incidents.md's gateway file (the
operator's read table for both pinned servers) and the grants an incident run gets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.cli.gateway import app
from tests.incident.conftest import npm_entry
from tests.incident.test_datadog_gateway import DATADOG_READ
from tests.incident.test_sentry_gateway import SENTRY_READ

pytestmark = [pytest.mark.npm, pytest.mark.timeout(120)]
DOC = Path(__file__).parents[2] / "docs" / "incidents.md"


def test_check_lists_exactly_the_documented_read_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / "home"))
    match = re.search(r"```toml\n# corral-gateway.toml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert match, "docs/incidents.md lost its corral-gateway.toml example"
    npm = str(npm_entry("@sentry/mcp-server/dist/index.js")).split("/node_modules/")[0]
    (tmp_path / "corral-gateway.toml").write_text(match[1].replace("/opt/mcp", npm), encoding="utf-8")
    (tmp_path / "corral.toml").write_text(
        '[gateway]\ngrants = ["sentry.*:read", "datadog.*:read"]\n'
        '[secrets]\nSENTRY_TOKEN = "env:T"\nDD_API_KEY = "env:T"\nDD_APP_KEY = "env:T"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("T", "incident-canary-41c2")
    result = CliRunner().invoke(app, ["check", "--repo", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["unavailable_upstreams"] == {}
    assert sorted(t["tool"] for t in report["allowed"]) == sorted(
        [f"sentry.{t}" for t in SENTRY_READ] + [f"datadog.{t}" for t in DATADOG_READ]
    )
    assert {t["access"] for t in report["allowed"]} == {"read"}
