"""End-to-end fixtures: the real Docker Engine, the real Claude Code CLI, the scripted model."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from corral.config import DEFAULT_CLAUDE_CODE, DEFAULT_IMAGE
from corral.errors import SandboxError
from corral.events import AnyEvent
from corral.model.playbook import Playbook
from corral.model.scripted import scripted_app
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


def run_task(
    repo: Path, task: str, playbook: Path | None = None, settings: Settings | None = None
) -> RunResult:
    settings = settings or Settings()
    services = Services(settings)
    try:
        run_id = RunOrchestrator(services).run(RunRequest(task=task, repo=repo, playbook=playbook))
    finally:
        services.close()
    return stored_run(settings, run_id)


def stored_run(settings: Settings, run_id: str) -> RunResult:
    """A run as its state row and audit chain hold it, read through a fresh set of services."""
    services = Services(settings)
    try:
        return RunResult(run_id, services.state().get_run(run_id), services.audit().read(run_id), settings)
    finally:
        services.close()


def leftovers(docker_client: Any, settings: Settings, run_id: str) -> list[str]:
    """Everything a run could leave behind: containers, its socket directory, its worktree."""
    found = [
        c.id for c in docker_client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})
    ]
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


class RecordingUpstream:
    """The scripted model as a real HTTP upstream on 127.0.0.1 that remembers what each request carried."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.keys: list[str] = []
        self.systems: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.keys.append(dict(scope["headers"]).get(b"x-api-key", b"").decode())
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if body:
            system = json.loads(body).get("system", "")
            self.systems.append(system if isinstance(system, str) else json.dumps(system))

        replayed = False

        async def replay() -> dict[str, Any]:
            # The body once, then the real channel: the app listens on it for the disconnect.
            nonlocal replayed
            if replayed:
                return dict(await receive())
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


@contextmanager
def serve_upstream(playbook: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingUpstream]:
    """Serve a playbook as the live upstream (ANTHROPIC_BASE_URL), as a user's real endpoint would be."""
    upstream = RecordingUpstream(scripted_app(Playbook.from_path(playbook), "/workspace"))
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(upstream, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{port}")
    try:
        yield upstream
    finally:
        server.should_exit = True
        thread.join(5)
