"""Project images end to end: real builds with registry access, real runs without network."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from corral.settings import Settings
from tests.e2e.conftest import git, run_task

LOOK = "turns:\n  - tool_use: [{name: Bash, input: {command: '%s'}}]\n  - text: done\n"


def _checks_and_images(result: Any) -> tuple[Any, set[str]]:
    (check,) = result.of("check.result")
    return check, {e.image for e in result.of("sandbox.created")}


def test_python_project_passes_its_own_suite_with_a_pypi_dependency(
    python_image: str, python_repo: Path, tmp_path: Path
) -> None:
    playbook = tmp_path / "p.yaml"
    # The agent's sandbox has the dependency too, from the image, and imports the workspace's code.
    playbook.write_text(LOOK % 'python3 -c "import dateutil, freezegun; print(freezegun.__file__)"')
    result = run_task(python_repo, "look around", playbook)
    assert result.record.phase == "awaiting_approval", result.record
    check, images = _checks_and_images(result)
    assert check.passed and check.exit_code == 0, check.output
    assert " passed" in check.output and "failed" not in check.output
    assert images == {python_image}
    outputs = [e.output for e in result.of("tool.result")]
    assert any("/workspace/freezegun/__init__.py" in output for output in outputs), outputs


def test_node_project_runs_npm_test_after_npm_ci(node_image: str, node_repo: Path, tmp_path: Path) -> None:
    playbook = tmp_path / "p.yaml"
    playbook.write_text(LOOK % "ls /node_modules/tape/package.json")
    result = run_task(node_repo, "look around", playbook)
    assert result.record.phase == "awaiting_approval", result.record
    check, images = _checks_and_images(result)
    assert check.passed, check.output
    assert "# pass  5" in check.output and "# ok" in check.output
    assert images == {node_image}
    outputs = [e.output for e in result.of("tool.result")]
    assert outputs == ["/node_modules/tape/package.json"], outputs


def test_on_the_default_image_the_same_suite_fails(
    agent_image: str, python_repo: Path, tmp_path: Path
) -> None:
    """The control: without the project image python-dateutil is missing and the suite cannot pass."""
    repo = tmp_path / "plain"
    shutil.copytree(python_repo, repo)
    config = (repo / "corral.toml").read_text()
    (repo / "corral.toml").write_text(
        config[: config.index("[sandbox.image]")] + config[config.index("[checks]") :]
    )
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "default image")
    playbook = tmp_path / "p.yaml"
    playbook.write_text("turns:\n  - text: done\n")
    result = run_task(repo, "look around", playbook, Settings())
    check, images = _checks_and_images(result)
    assert images == {"corral/agent:default"}
    assert not check.passed and "No module named 'dateutil'" in check.output
