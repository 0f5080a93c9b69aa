"""Bad input and faults: a failing step, a hand-edited image, a missing image at run start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.config import load_config
from corral.errors import ImageBuildFailed
from corral.runs import RunOrchestrator, RunRequest
from corral.sandbox.images import find_image
from corral.sandbox.project_image import build_chain, recipes
from corral.services import Services
from corral.settings import Settings
from tests.e2e.conftest import stored_run

DONE = "turns:\n  - text: done\n"


def _run(repo: Path, tmp_path: Path) -> tuple[Any, list[str]]:
    playbook = tmp_path / "done.yaml"
    playbook.write_text(DONE)
    seen: list[str] = []
    settings = Settings()
    services = Services(settings, progress=seen.append)
    try:
        run_id = RunOrchestrator(services).run(RunRequest(task="look", repo=repo, playbook=playbook))
    finally:
        services.close()
    return stored_run(settings, run_id), seen


def test_a_failing_setup_step_stops_the_build_with_its_output_and_code_and_tags_nothing(
    docker_client: Any, agent_image: str, small_repo: Any, drop_images: list[str]
) -> None:
    repo = small_repo("corral-test-failing-step", ["echo step-said-this-4f1c; exit 7", "echo never-reached"])
    config = load_config(repo)
    (recipe,) = recipes(docker_client, config, repo)
    drop_images.append(recipe.repository)
    with pytest.raises(ImageBuildFailed) as caught:
        build_chain(docker_client, config, repo)
    failure = caught.value
    assert failure.exit_code == 7
    assert "step-said-this-4f1c" in failure.output and "never-reached" not in failure.output
    assert "exit 7" in failure.step and "step-said-this-4f1c" in failure.message
    assert find_image(docker_client, recipe.tag) is None
    assert docker_client.images.list(name=recipe.repository) == []


def test_a_missing_image_is_built_at_run_start_with_progress(
    docker_client: Any, agent_image: str, small_repo: Any, drop_images: list[str], tmp_path: Path
) -> None:
    repo = small_repo("corral-test-missing-image", ["echo built-at-run-start > marker"])
    (recipe,) = recipes(docker_client, load_config(repo), repo)
    drop_images.append(recipe.repository)
    assert find_image(docker_client, recipe.tag) is None
    result, seen = _run(repo, tmp_path)
    assert result.record.phase == "awaiting_approval", result.record
    assert f"{recipe.tag} is not built yet: building it now" in seen
    assert any(line.startswith("Step ") for line in seen) and any("verifying" in line for line in seen)
    assert {e.image for e in result.of("sandbox.created")} == {recipe.tag}
    (check,) = result.of("check.result")
    assert check.passed and check.output.strip() == "v1"


def test_a_hand_edited_image_is_refused_at_run_start_naming_what_is_wrong(
    docker_client: Any, agent_image: str, small_repo: Any, drop_images: list[str], tmp_path: Path
) -> None:
    repo = small_repo("corral-test-hand-edited", ["true"])
    (built,) = build_chain(docker_client, load_config(repo), repo)
    repository, _, tag = built.tag.rpartition(":")
    drop_images.append(repository)
    # Someone "fixes" the image by hand: a setuid shell, root as the user, committed over the same tag.
    container = docker_client.containers.run(
        built.tag, ["sh", "-c", "cp /bin/sh /usr/local/bin/rootsh && chmod 4755 /usr/local/bin/rootsh"],
        user="0", detach=True,
    )  # fmt: skip
    try:
        assert container.wait()["StatusCode"] == 0
        container.commit(repository=repository, tag=tag, changes=["USER root"])
    finally:
        container.remove(force=True)
    result, _seen = _run(repo, tmp_path)
    assert result.record.phase == "failed"
    reason = result.of("run.finished")[-1].reason
    assert "failed verification" in reason and built.tag in reason
    assert "/usr/local/bin/rootsh (mode 4755)" in reason
    assert "not uid 1000" in reason
    assert result.of("sandbox.created") == []
