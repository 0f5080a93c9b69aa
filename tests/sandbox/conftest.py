"""Fixtures for the sandbox tests: the real Docker Engine, the agent image, workspaces, sandboxes.

The first session builds corral/base:bookworm and corral/agent:default (about a minute); later
sessions reuse them. Every container a test makes carries a run id starting with RUN_PREFIX, and
the session removes any that a failed test left behind.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from corral.config import DEFAULT_CLAUDE_CODE
from corral.errors import SandboxError
from corral.sandbox import RUN_LABEL, SandboxSpec, docker_runtime
from corral.sandbox.docker import DockerBackend, DockerSandbox
from corral.sandbox.images import AGENT_IMAGE, docker_client, ensure_images
from corral.sandbox.mounts import grant_agent_access

RUN_PREFIX = f"test-sandbox-{uuid.uuid4().hex[:6]}-"
"""Unique to this test session, so its clean-up never removes another session's containers."""
PIN = DEFAULT_CLAUDE_CODE
SECRET_CANARY = "corral-hidden-canary-5e1f0b7a"
READONLY_CANARY = "corral-readonly-canary-a41c"


def _engine() -> docker.DockerClient:
    try:
        return docker_client()
    except SandboxError as exc:
        if os.environ.get("CORRAL_REQUIRE_SERVICES") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def client() -> Iterator[docker.DockerClient]:
    engine = _engine()
    yield engine
    for container in engine.containers.list(all=True, filters={"label": RUN_LABEL}):
        if (container.labels or {}).get(RUN_LABEL, "").startswith(RUN_PREFIX):
            container.remove(force=True)
    engine.close()


@pytest.fixture(scope="session")
def agent_image(client: docker.DockerClient) -> str:
    ensure_images(client, PIN, AGENT_IMAGE, progress=lambda message: print(message, flush=True))
    return AGENT_IMAGE


@pytest.fixture
def backend(client: docker.DockerClient, tmp_path: Path) -> DockerBackend:
    return DockerBackend(client, mask_root=tmp_path / "masks")


def new_run_id() -> str:
    return RUN_PREFIX + uuid.uuid4().hex[:10]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A small repository tree with read-only and hidden parts, writable by the agent (uid 1000)."""
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "app.py").write_text("print('hello')\n")
    (ws / "billing").mkdir()
    (ws / "billing" / "rates.py").write_text(f"RATE = 3  # {READONLY_CANARY}\n")
    (ws / "config.yaml").write_text(f"mode: prod  # {READONLY_CANARY}\n")
    (ws / "secrets").mkdir()
    (ws / "secrets" / "prod.key").write_text(f"{SECRET_CANARY}\n")
    (ws / ".env").write_text(f"DATABASE_URL=postgres://{SECRET_CANARY}@db/prod\n")
    (ws / "conf").mkdir()
    (ws / "conf" / "public.yaml").write_text("public: true\n")
    (ws / "conf" / "private.env").write_text(f"TOKEN={SECRET_CANARY}\n")
    # A worktree's `.git` is a file that names the host's gitdir.
    (ws / ".git").write_text("gitdir: /srv/repo/.git/worktrees/run\n")
    grant_agent_access(ws)
    return ws


RUNTIME = docker_runtime("runc")
"""`CORRAL_SANDBOX_RUNTIME` picks the runtime of every sandbox here: `make test` runs this directory again
under runsc, so each isolation property is proven under both."""


def spec_for(workspace: Path, image: str, **overrides: object) -> SandboxSpec:
    fields: dict[str, object] = {
        "runtime": RUNTIME,
        "run_id": new_run_id(),
        "image": image,
        "workspace": workspace,
        "readonly_paths": ("billing/**", "config.yaml", "conf/**"),
        "hidden_paths": ("secrets/**", ".env", "conf/private.env"),
        "pids": 256,
        "memory": "1g",
        "cpus": 1.0,
        "env": {"CORRAL_RUN": "yes"},
    }
    fields.update(overrides)
    return SandboxSpec(**fields)  # type: ignore[arg-type]


@pytest.fixture
def make_sandbox(backend: DockerBackend, agent_image: str) -> Iterator[Callable[..., DockerSandbox]]:
    made: list[DockerSandbox] = []

    def make(workspace: Path, **overrides: object) -> DockerSandbox:
        sandbox = backend.create(spec_for(workspace, agent_image, **overrides))
        made.append(sandbox)
        return sandbox

    yield make
    for sandbox in made:
        sandbox.remove()


@pytest.fixture
def sandbox(make_sandbox: Callable[..., DockerSandbox], workspace: Path) -> DockerSandbox:
    return make_sandbox(workspace)


class UnixEchoServer:
    """A unix socket echo server on the host, connectable by uid 1000 (mode 0666)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        os.chmod(path, 0o666)
        self._server.listen()
        self._server.settimeout(0.2)
        self._done = threading.Event()
        self.served = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._done.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = conn.recv(4096)
                conn.sendall(b"echo:" + data)
                self.served += 1

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=2)
        self._server.close()


_V2_NAMES = {"pids.max": "pids.max", "memory.limit_in_bytes": "memory.max", "cpu.cfs_quota_us": "cpu.max"}


def host_cgroup(sandbox: DockerSandbox, controller: str, name: str) -> str:
    """A file of the container's cgroup as the host sees it (cgroup v1 layout; v2 names mapped)."""
    pid = sandbox.inspect()["State"]["Pid"]
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return (Path("/sys/fs/cgroup") / controller / path.lstrip("/") / name).read_text().strip()
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            text = (Path("/sys/fs/cgroup") / line[3:].lstrip("/") / _V2_NAMES[name]).read_text().strip()
            return text.split()[0] if name == "cpu.cfs_quota_us" else text
    raise AssertionError(f"no {controller} cgroup for pid {pid}")
