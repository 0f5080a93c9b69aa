"""Fixtures for project images: real sources from PyPI and npm, real `docker build`, real runs.

The projects are other people's published packages, fetched at test-setup time with the registries'
own clients (`pip download` of an sdist, `npm pack` of a tarball) and never committed here:
- freezegun 1.5.1 (Apache-2.0): its tests import python-dateutil, a PyPI package beyond pytest;
- concat-map 0.0.1 (MIT): `npm test` runs `tape`, a devDependency that `npm ci` installs.
concat-map ships no lockfile, so `npm install --package-lock-only` (the npm client again) writes one.
The image builds reach the registries; the runs after them have no network.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.config import load_config
from corral.sandbox.project_image import build_chain
from tests.e2e.conftest import _fail_or_skip, agent_image, docker_client, git

__all__ = ["agent_image", "docker_client"]

PYTHON_PACKAGE = ("freezegun", "1.5.1")
NODE_PACKAGE = ("concat-map", "0.0.1")

PYTHON_CONFIG = """\
[project]
name = "{name}"
[sandbox.image]
apt = ["python3-venv"]
inputs = ["setup.cfg"]
setup = [
  "python3 -m venv --system-site-packages /opt/corral/venv",
  "pip install 'python-dateutil >= 2.7'",
]
[checks]
command = "python3 -m pytest -q -p no:cacheprovider tests"
"""

NODE_CONFIG = """\
[project]
name = "{name}"
[sandbox.image]
apt = ["nodejs", "npm"]
inputs = ["package.json", "package-lock.json"]
setup = ["npm ci"]
[checks]
command = "npm test"
"""


def _fetch(argv: list[str], cwd: Path) -> None:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _fail_or_skip(f"{argv[0]} could not fetch a test project from its registry: {exc}")
        return
    if done.returncode != 0:
        _fail_or_skip(f"{' '.join(argv)} failed: {done.stderr[-800:]}")


def _unpack(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    (top,) = [p for p in into.iterdir() if p.is_dir()]
    return top


@pytest.fixture(scope="session")
def python_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    name, version = PYTHON_PACKAGE
    where = tmp_path_factory.mktemp("pypi")
    _fetch(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", name, f"{name}=={version}",
         "-d", str(where)],
        where,
    )  # fmt: skip
    return _unpack(where / f"{name}-{version}.tar.gz", tmp_path_factory.mktemp("pypi-src"))


@pytest.fixture(scope="session")
def node_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("npm") is None:
        _fail_or_skip("npm is not installed: it fetches the Node test project from the npm registry")
    name, version = NODE_PACKAGE
    where = tmp_path_factory.mktemp("npm")
    _fetch(["npm", "pack", f"{name}@{version}", "--pack-destination", str(where)], where)
    top = _unpack(where / f"{name}-{version}.tgz", tmp_path_factory.mktemp("npm-src"))
    _fetch(["npm", "install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund"], top)
    return top


def project_repo(sources: Path, root: Path, config: str) -> Path:
    """A git repository holding the published sources and a corral.toml, committed on main."""
    shutil.copytree(sources, root)
    (root / "corral.toml").write_text(config)
    (root / ".gitignore").write_text("__pycache__/\n.pytest_cache/\nnode_modules/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "published sources")
    return root


def build(client: Any, repo: Path) -> str:
    """Build the repo's project image (a no-op when its tag exists) and return the tag."""
    config = load_config(repo)
    return build_chain(client, config, repo, progress=lambda m: print(m, flush=True))[-1].tag


@pytest.fixture(scope="session")
def python_repo(python_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("py") / "freezegun"
    return project_repo(python_sources, root, PYTHON_CONFIG.format(name="corral-test-freezegun"))


@pytest.fixture(scope="session")
def node_repo(node_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("node") / "concat-map"
    return project_repo(node_sources, root, NODE_CONFIG.format(name="corral-test-concat-map"))


@pytest.fixture(scope="session")
def python_image(docker_client: Any, agent_image: str, python_repo: Path) -> str:
    return build(docker_client, python_repo)


@pytest.fixture(scope="session")
def node_image(docker_client: Any, agent_image: str, node_repo: Path) -> str:
    return build(docker_client, node_repo)


@pytest.fixture
def small_repo(tmp_path: Path) -> Iterator[Any]:
    """A tiny project whose image needs no apt and no network: for the fault and gc tests."""

    def make(name: str, setup: list[str], team: str = "default") -> Path:
        root = tmp_path / name
        root.mkdir()
        (root / "deps.lock").write_text("v1\n")
        steps = ", ".join(f'"{step}"' for step in setup)
        (root / "corral.toml").write_text(
            f'[project]\nname = "{name}"\nteam = "{team}"\n'
            f'[sandbox.image]\ninputs = ["deps.lock"]\nsetup = [{steps}]\n'
            "[checks]\ncommand = 'cat /opt/corral/deps/deps.lock'\n"
        )
        git(root, "init", "-q", "-b", "main")
        git(root, "add", "-A")
        git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
        return root

    yield make


@pytest.fixture
def drop_images(docker_client: Any) -> Iterator[list[str]]:
    """Repositories whose images a test made for itself and removes afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        for image in docker_client.images.list(name=name):
            for tag in image.tags:
                try:
                    docker_client.images.remove(tag, force=True)
                except Exception as exc:  # a leftover is only disk space; say so, do not fail
                    print(f"could not remove {tag}: {exc}", file=sys.stderr)
