"""End-to-end fixtures: the real Docker Engine, the real Claude Code CLI, the scripted model."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.config import DEFAULT_CLAUDE_CODE, DEFAULT_IMAGE
from corral.errors import SandboxError
from corral.events import AnyEvent
from corral.runs import RunOrchestrator, RunRequest
from corral.sandbox import RUN_LABEL
from corral.services import Services
from corral.settings import Settings
from corral.state.models import RunRecord


def _fail_or_skip(message: str) -> None:
    import os

    if os.environ.get("CORRAL_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def docker_client() -> Any:
    from corral.sandbox.images import docker_client as connect

    try:
        client = connect()
    except SandboxError as exc:
        _fail_or_skip(str(exc))
    return client


@pytest.fixture(scope="session")
def agent_image(docker_client: Any) -> str:
    from corral.sandbox.images import ensure_images

    ensure_images(docker_client, DEFAULT_CLAUDE_CODE, DEFAULT_IMAGE, progress=lambda m: print(m, flush=True))
    return DEFAULT_IMAGE


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def make_repo(root: Path, files: dict[str, str], config: str) -> Path:
    root.mkdir(parents=True)
    for rel, text in {**files, "corral.toml": config, ".gitignore": "__pycache__/\n.pytest_cache/\n"}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return root


@dataclass
class RunResult:
    run_id: str
    record: RunRecord
    events: list[AnyEvent]
    settings: Settings

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def of(self, kind: str) -> list[Any]:
        return [e for e in self.events if e.kind == kind]


def run_task(repo: Path, task: str, playbook: Path | None = None, settings: Settings | None = None) -> RunResult:
    settings = settings or Settings()
    services = Services(settings)
    try:
        run_id = RunOrchestrator(services).run(RunRequest(task=task, repo=repo, playbook=playbook))
        record = services.state().get_run(run_id)
        events = services.audit().read(run_id)
    finally:
        services.close()
    return RunResult(run_id, record, events, settings)


def leftovers(docker_client: Any, settings: Settings, run_id: str) -> list[str]:
    """Everything a run could leave behind: containers, its socket directory, its worktree."""
    found = [c.id for c in docker_client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})]
    if settings.run_socket_dir(run_id).exists():
        found.append(str(settings.run_socket_dir(run_id)))
    if (settings.worktrees_dir / run_id).exists():
        found.append(str(settings.worktrees_dir / run_id))
    return found


@pytest.fixture
def write_playbook(tmp_path: Path) -> Iterator[Any]:
    def write(text: str, name: str = "playbook.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    yield write
