"""Caching, listing and garbage collection of project images."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from corral.config import load_config
from corral.sandbox.images import find_image
from corral.sandbox.project_image import build_chain, recipes, sandbox_image
from corral.services import Services
from corral.settings import Settings
from tests.e2e.conftest import git


def _corral(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", *args], capture_output=True, text=True, timeout=900, check=False
    )


def test_an_unchanged_project_reuses_its_image(docker_client: Any, node_image: str, node_repo: Path) -> None:
    seen: list[str] = []
    tag = sandbox_image(docker_client, load_config(node_repo), node_repo, progress=seen.append)
    assert tag == node_image and seen == []
    proc = _corral("image", "build", "--repo", str(node_repo), "--json")
    assert proc.returncode == 0, proc.stderr
    (project,) = json.loads(proc.stdout)["project"]
    assert project == {"image": node_image, "id": project["id"], "seconds": 0.0, "built": False}


def test_a_changed_lockfile_rebuilds_only_the_layers_from_the_inputs_on(
    docker_client: Any, node_image: str, node_repo: Path, tmp_path: Path, drop_images: list[str]
) -> None:
    repo = tmp_path / "changed"
    shutil.copytree(node_repo, repo)
    lock = (repo / "package-lock.json").read_text()
    (repo / "package-lock.json").write_text(lock + "\n")  # the same locks, other bytes
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "reformat the lockfile")
    config = load_config(repo)
    (old_recipe,) = recipes(docker_client, load_config(node_repo), node_repo)
    (new_recipe,) = recipes(docker_client, config, repo)
    assert new_recipe.tag != node_image and new_recipe.inputs_hash != old_recipe.inputs_hash
    seen: list[str] = []
    (built,) = build_chain(docker_client, config, repo, progress=seen.append)
    drop_images.append(f"{new_recipe.repository}:{new_recipe.digest}")
    old_layers = docker_client.images.get(node_image).attrs["RootFS"]["Layers"]
    new_layers = docker_client.images.get(built.tag).attrs["RootFS"]["Layers"]
    agent_layers = docker_client.images.get(new_recipe.base).attrs["RootFS"]["Layers"]
    shared = next(i for i, (a, b) in enumerate(zip(old_layers, new_layers, strict=False)) if a != b)
    # The CA, apt and layout layers above corral/agent are reused; the input copy and npm ci are new.
    assert shared > len(agent_layers) + 1
    assert any("apt-get install" in line for line in seen)
    apt_at = next(i for i, line in enumerate(seen) if "apt-get install" in line)
    assert seen[apt_at + 1].strip() == "---> Using cache"
    assert any("npm ci" in line for line in seen) and "added " in "\n".join(seen)


def test_image_list_shows_inputs_hash_size_and_age(node_image: str, node_repo: Path) -> None:
    proc = _corral("image", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {tag: row for row in json.loads(proc.stdout) for tag in row["tags"]}
    row = rows[node_image]
    (recipe_hash,) = {row["inputs_hash"]}
    assert row["kind"] == "project" and row["name"] == "corral-test-concat-map"
    assert len(recipe_hash) == 16 and row["size_bytes"] > 0 and row["created"]
    table = _corral("image", "list")
    assert "inputs hash" in table.stdout.replace("\n", " ") or "inputs" in table.stdout


def test_gc_images_removes_unused_project_images_and_never_one_in_use(
    docker_client: Any, agent_image: str, small_repo: Any, drop_images: list[str]
) -> None:
    # A team of its own: gc judges every image of its team, and the session's other images are in
    # the default team without a recorded project.
    repo = small_repo("corral-test-gc", ["true"], team="corral-test-gc-team")
    tags = []
    for version in ("v1", "v2", "v3"):
        (repo / "deps.lock").write_text(version + "\n")
        tags.append(build_chain(docker_client, load_config(repo), repo)[-1].tag)
    drop_images.append(tags[0].rpartition(":")[0])
    old, in_use, current = tags
    services = Services(Settings())
    try:
        services.state(load_config(repo)).ensure_project(name="corral-test-gc", repo=str(repo), image=current)
    finally:
        services.close()
    container = docker_client.containers.create(in_use, ["true"])
    try:
        proc = _corral("gc", "--images", "--team", "corral-test-gc-team", "--json")
        assert proc.returncode == 0, proc.stderr
        assert find_image(docker_client, in_use) is not None
    finally:
        container.remove(force=True)
    report = json.loads(proc.stdout)
    assert report["images_removed"] == [old] and find_image(docker_client, old) is None
    assert report["images_in_use"] == [in_use] and report["images_current"] == [current]
    assert find_image(docker_client, current) is not None
