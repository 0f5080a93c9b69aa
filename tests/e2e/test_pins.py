"""Every run checks the project's pin at start: the model config, the CLI in the image and the tool
surface Claude Code reports at init. A mismatch fails the run with a clear message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from corral.demo import DEMO_CONFIG, DEMO_FILES, DEMO_TASK, demo_playbook_path
from tests.e2e.conftest import git, make_repo, run_task

pytestmark = pytest.mark.docker


def _corral(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", *args, "--repo", str(repo)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_changed_tool_surface_fails_the_run_and_a_changed_cli_pin_too(
    agent_image: str, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "demo", DEMO_FILES, DEMO_CONFIG)
    first = run_task(repo, DEMO_TASK, demo_playbook_path())
    (init,) = first.of("agent.init")
    assert init.claude_code_version and "Bash" in init.tools and init.tool_surface_hash
    assert any(t.startswith("forge.comment@") for t in init.gateway_tools)

    pinned = _corral(repo, "model", "pin", "--from-run", first.run_id, "--reason", "baseline", "--by", "ops")
    assert pinned.returncode == 0, pinned.stderr
    assert init.tool_surface_hash in pinned.stdout

    # Same surface: the run goes through.
    second = run_task(repo, DEMO_TASK, demo_playbook_path())
    assert second.record.phase == "awaiting_approval", second.record.failure_reason

    # One grant fewer is one gateway tool fewer: a changed surface, refused before the agent acts.
    grants = 'grants = ["forge.open_pull_request", "forge.list_checks", "deploy.stage"]'
    (repo / "corral.toml").write_text(DEMO_CONFIG + f"\n[gateway]\n{grants}\n")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "fewer grants")
    third = run_task(repo, DEMO_TASK, demo_playbook_path())
    assert third.record.phase == "failed"
    assert (
        "tool surface" in third.record.failure_reason
        and init.tool_surface_hash in third.record.failure_reason
    )
    assert third.of("tool.call") == []  # the agent never acted

    # A pin on another Claude Code version fails the next run at start, before any container.
    repinned = _corral(repo, "model", "pin", "--claude-code", "2.0.1", "--reason", "test", "--by", "ops")
    assert repinned.returncode == 0, repinned.stderr
    fourth = run_task(repo, DEMO_TASK, demo_playbook_path())
    assert fourth.record.phase == "failed"
    assert "Claude Code version" in fourth.record.failure_reason and "2.0.1" in fourth.record.failure_reason
    assert fourth.of("sandbox.created") == []

    history = _corral(repo, "model", "history", "--json")
    assert history.returncode == 0 and history.stdout.count('"pinned_by": "ops"') == 2
