"""A team image under a project image, and `corral doctor` on whether the project image is current."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from corral.config import load_config
from corral.sandbox.project_image import build_chain, image_status

TEAM = "corral-test-team"


def _corral(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", *args], capture_output=True, text=True, timeout=900, check=False
    )


def test_a_team_image_is_built_first_and_the_project_image_builds_from_it(
    docker_client: Any, agent_image: str, small_repo: Any, drop_images: list[str]
) -> None:
    repo = small_repo("corral-test-on-team", ["cat /opt/corral/team/marker > from-team"], team=TEAM)
    config_text = (repo / "corral.toml").read_text()
    (repo / "corral.toml").write_text(
        config_text + '[team.image]\nsetup = ["echo team-layer-7c2e > /opt/corral/team/marker"]\n'
    )
    team, project = build_chain(docker_client, load_config(repo), repo)
    drop_images += [project.tag.rpartition(":")[0], team.tag.rpartition(":")[0]]
    assert team.tag.startswith(f"corral/team-{TEAM}:") and project.tag.startswith("corral/project-")
    team_image, project_image = docker_client.images.get(team.tag), docker_client.images.get(project.tag)
    assert team_image.labels["io.corral.image"] == "team" and project_image.labels["io.corral.team"] == TEAM
    team_layers = team_image.attrs["RootFS"]["Layers"]
    assert project_image.attrs["RootFS"]["Layers"][: len(team_layers)] == team_layers
    out = docker_client.containers.run(
        project.tag, ["cat", "/opt/corral/deps/from-team"], network_disabled=True, remove=True
    )
    assert out.decode().strip() == "team-layer-7c2e"
    # Built once, both are reused: the project's digest names the team image by its id now.
    again = build_chain(docker_client, load_config(repo), repo)
    assert [(i.tag, i.built) for i in again] == [(team.tag, False), (project.tag, False)]


def test_doctor_says_whether_the_project_image_is_built_and_current(
    docker_client: Any, agent_image: str, small_repo: Any, drop_images: list[str]
) -> None:
    repo = small_repo("corral-test-doctor", ["true"])
    config = load_config(repo)
    current, detail = image_status(docker_client, config, repo)
    assert not current and detail.endswith("is not built")
    (built,) = build_chain(docker_client, config, repo)
    drop_images.append(built.tag.rpartition(":")[0])
    assert image_status(docker_client, config, repo)[0]
    (repo / "deps.lock").write_text("v2\n")
    current, detail = image_status(docker_client, config, repo)
    assert not current and "changed since the last build" in detail
    proc = _corral("doctor", "--repo", str(repo), "--json")
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert checks["project image"]["ok"] is False and "corral image build" in checks["project image"]["fix"]
    assert proc.returncode == 1
    # What the fix says to run: it shows the build's progress, and then doctor is content.
    build = _corral("image", "build", "--repo", str(repo))
    assert build.returncode == 0, build.stderr
    assert (
        "Step " in build.stderr and "verifying" in build.stderr and "COPY --chown=1000:1000" in build.stderr
    )
    rebuilt = image_status(docker_client, load_config(repo), repo)
    assert rebuilt[0] and "built for the current inputs" in rebuilt[1]
    proc = _corral("doctor", "--repo", str(repo), "--json")
    assert {c["name"]: c["ok"] for c in json.loads(proc.stdout)}["project image"] is True
