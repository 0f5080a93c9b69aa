"""`corral image list` and `corral image build` through the Typer runner (images already built)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.cli.image import app

from .conftest import PIN

pytestmark = pytest.mark.docker


def test_image_list_json_shows_the_claude_code_label(agent_image: str) -> None:
    result = CliRunner().invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    agent = next(row for row in rows if agent_image in row["tags"])
    assert agent["claude_code"] == PIN and agent["kind"] == "agent"
    assert any("corral/base:bookworm" in row["tags"] and row["kind"] == "base" for row in rows)


def test_image_build_reuses_existing_images(agent_image: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["build", "--json", "--repo", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["agent"]["claude_code"] == PIN
    assert report["base"]["built"] is False and report["agent"]["built"] is False


def test_image_build_with_a_foreign_pin_names_the_fix(agent_image: str, tmp_path: Path) -> None:
    (tmp_path / "corral.toml").write_text('[agent]\nclaude_code = "9.9.9"\n')
    result = CliRunner().invoke(app, ["build", "--json", "--repo", str(tmp_path)])
    assert result.exit_code == 1
    error = json.loads(result.output)
    assert f"bundles Claude Code {PIN}" in error["error"] and "9.9.9" in error["error"]
    assert "[agent].claude_code" in error["hint"]
