"""`corral gc --images`: remove the team's project and team images that no project uses.

An image is kept when a container (running or not) was made from it, or when it is the current
image of one of the team's projects: the tag its corral.toml and input files give today. A project
whose repository is there but whose corral.toml cannot be evaluated keeps all its images, since
corral cannot tell which one it wants.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

from corral.config import load_config
from corral.errors import CorralError, SandboxError
from corral.sandbox.images import IMAGE_KIND_LABEL, NAME_LABEL, TEAM_LABEL
from corral.sandbox.project_image import has_recipe, recipes
from corral.state.db import StateStore


@dataclass
class ImageGcReport:
    removed: list[str] = field(default_factory=list)
    in_use: list[str] = field(default_factory=list)
    """Images a container was made from: never removed."""
    current: list[str] = field(default_factory=list)
    """The images the team's projects use today."""


def _wanted(client: docker.DockerClient, state: StateStore) -> tuple[set[str], set[str]]:
    """(tags the projects want today, project names whose images are all kept)."""
    tags: set[str] = set()
    undecided: set[str] = set()
    for project in state.list_projects():
        repo = Path(project.repo)
        if not repo.is_dir():
            continue
        try:
            config = load_config(repo)
            if has_recipe(config):
                tags.update(recipe.tag for recipe in recipes(client, config, repo))
        except CorralError:
            undecided.add(project.name)
    return tags, undecided


def collect_images(client: docker.DockerClient, state: StateStore) -> ImageGcReport:
    report = ImageGcReport()
    try:
        images = client.images.list(filters={"label": f"{TEAM_LABEL}={state.team}"})
        # The summary list, not containers.list(): that inspects each one and trips over any
        # container another process removes meanwhile.
        used = {str(c.get("ImageID", "")) for c in client.api.containers(all=True)}
    except docker.errors.DockerException as exc:
        raise SandboxError(f"Docker Engine failed to list images or containers: {exc}") from exc
    wanted, undecided = _wanted(client, state)
    for image in images:
        labels = image.labels or {}
        if labels.get(IMAGE_KIND_LABEL) not in ("project", "team"):
            continue
        name = ", ".join(sorted(image.tags)) or str(image.id)
        if str(image.id) in used:
            report.in_use.append(name)
        elif wanted.intersection(image.tags) or labels.get(NAME_LABEL) in undecided:
            report.current.append(name)
        else:
            with contextlib.suppress(docker.errors.APIError):
                # Without force: an image another image is built FROM (a team image) stays.
                for tag in image.tags or [str(image.id)]:
                    client.images.remove(tag)
                report.removed.append(name)
    return report
