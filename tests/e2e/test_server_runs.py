"""Runs through a real `corral server` process: `corral run --server` follows a real sandboxed run, and
a server killed mid-run loses nothing it accepted: the next start marks the run failed and removes
its container. In-process, two runs submitted to one server at once share the server's stores."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.audit.log import AuditLog
from corral.demo import DEMO_CONFIG, DEMO_FILES, DEMO_TASK, demo_playbook_path
from corral.gc import ORPHAN_REASON
from corral.services import Services
from corral.settings import Settings, load_settings
from corral.state.db import StateStore
from corral.state.users import add_user, new_token
from tests.e2e.conftest import leftovers, make_repo

pytestmark = pytest.mark.docker
CORRAL = [sys.executable, "-m", "corral"]
SLOW = (
    "turns:\n  - tool_use: [{name: Bash, input: {command: \"python3 -c 'import time; time.sleep(60)'\"}}]\n"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _corral(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CORRAL, *args], capture_output=True, text=True, env=env, timeout=300, check=False)


class Server:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*CORRAL, "server", "--listen", f"127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/login", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("corral server did not come up")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def server() -> Iterator[Server]:
    added = _corral("user", "add", "alice", "--role", "approver", "--password", "pw-alice")
    assert added.returncode == 0, added.stderr
    handle = Server(_free_port())
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()


def _token() -> str:
    made = _corral("user", "token", "alice")
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def test_corral_run_server_follows_a_real_run_to_approval(
    agent_image: str, tmp_path: Path, server: Server
) -> None:
    repo = make_repo(tmp_path / "demo", DEMO_FILES, DEMO_CONFIG)
    env = {**os.environ, "CORRAL_SERVER_TOKEN": _token()}
    done = _corral(
        "run",
        DEMO_TASK,
        "--repo",
        str(repo),
        "--playbook",
        str(demo_playbook_path()),
        "--server",
        server.url,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "awaiting_approval" in done.stdout
    assert "Bash" in done.stderr  # the run's progress, streamed from the server as a local run prints it
    run_id = done.stdout.split("run ", 1)[1].split(":", 1)[0].strip()
    headers = {"Authorization": f"Bearer {env['CORRAL_SERVER_TOKEN']}"}
    record = httpx.get(f"{server.url}/api/runs/{run_id}", headers=headers).json()
    assert record["phase"] == "awaiting_approval" and record["checks_passed"] is True
    page = httpx.get(f"{server.url}/runs/{run_id}", headers=headers).text
    assert "return a + b" in page and 'class="gantt"' in page and "verified" in page
    refused = _corral("run", DEMO_TASK, "--repo", str(repo), "--server", server.url, env=dict(os.environ))
    assert refused.returncode == 2 and "CORRAL_SERVER_TOKEN" in refused.stderr


def test_a_restart_fails_the_run_the_killed_server_was_driving_and_removes_its_container(
    agent_image: str, docker_client: Any, tmp_path: Path, server: Server
) -> None:
    repo = make_repo(tmp_path / "slow", DEMO_FILES, DEMO_CONFIG)
    playbook = tmp_path / "slow.yaml"
    playbook.write_text(SLOW)
    headers = {"Authorization": f"Bearer {_token()}"}
    body = {"repo": str(repo), "task": "sleep", "playbook": str(playbook)}
    accepted = httpx.post(f"{server.url}/api/runs", json=body, headers=headers, timeout=120)
    assert accepted.status_code == 201, accepted.text
    run_id = accepted.json()["run_id"]
    settings = Settings()
    deadline = time.monotonic() + 120
    while not [c for c in leftovers(docker_client, settings, run_id) if len(c) == 64]:
        assert time.monotonic() < deadline, "the run's container never started"
        time.sleep(0.2)
    server.kill()  # mid-flight: the container is running and the run is not finished
    server.start()
    record = httpx.get(f"{server.url}/api/runs/{run_id}", headers=headers).json()
    assert (record["phase"], record["failure_reason"]) == ("failed", ORPHAN_REASON)
    assert [c for c in leftovers(docker_client, settings, run_id) if len(c) == 64] == []


def _counting(monkeypatch: pytest.MonkeyPatch, cls: type[Any]) -> list[tuple[Any, ...]]:
    """Every real `cls.open` call from now on, by its arguments."""
    calls: list[tuple[Any, ...]] = []
    real = cls.open.__func__

    def counting(klass: type[Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(klass, *args, **kwargs)

    monkeypatch.setattr(cls, "open", classmethod(counting))
    return calls


def test_two_runs_submitted_at_once_share_the_servers_stores_and_both_complete(
    agent_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from corral.web.app import create_app
    from corral.web.runner import Runner

    state_opens = _counting(monkeypatch, StateStore)
    audit_opens = _counting(monkeypatch, AuditLog)
    services = Services(load_settings())
    children: list[Services] = []
    clients: dict[int, set[int]] = {}  # run's Services -> the Docker clients it handed out
    real_for_run = services.for_run

    def for_run(*args: Any, **kwargs: Any) -> Services:
        child = real_for_run(*args, **kwargs)
        children.append(child)
        real_docker = child.docker

        def docker() -> Any:
            client = real_docker()
            clients.setdefault(id(child), set()).add(id(client))
            return client

        monkeypatch.setattr(child, "docker", docker)
        return child

    monkeypatch.setattr(services, "for_run", for_run)
    add_user(services.state(), "alice", "approver", "pw")
    headers = {"Authorization": f"Bearer {new_token(services.state(), 'alice')}"}
    runner = Runner(services)
    try:
        with TestClient(create_app(services, runner, secret="test")) as client:
            run_ids = []
            for name in ("one", "two"):  # the second is submitted while the first runs
                repo = make_repo(tmp_path / name, DEMO_FILES, DEMO_CONFIG)
                body = {"repo": str(repo), "task": DEMO_TASK, "playbook": str(demo_playbook_path())}
                accepted = client.post("/api/runs", json=body, headers=headers)
                assert accepted.status_code == 201, accepted.text
                run_ids.append(accepted.json()["run_id"])
            for thread in runner.threads:
                thread.join(600)
                assert not thread.is_alive(), "a run did not finish"
            records = [client.get(f"/api/runs/{r}", headers=headers).json() for r in run_ids]
        for record in records:
            assert (record["phase"], record["checks_passed"]) == ("awaiting_approval", True), record
        assert records[0]["container_id"] != records[1]["container_id"]
        # Each store was opened once, for the server: no run opened its own.
        assert len(state_opens) == 1 and len(audit_opens) == 1, (state_opens, audit_opens)
        assert len(children) == 2
        for child in children:
            assert child.state() is services.state() and child.audit() is services.audit()
            assert child._docker is None  # the run's own Docker client, closed with its Services
        # Each run talked to Docker through one client of its own, never the other's or the server's.
        one, two = (clients[id(c)] for c in children)
        assert len(one) == len(two) == 1 and not one & two
        # Both runs closed their Services; the server's stores still answer, and hold both chains.
        assert {r.run_id for r in services.state().list_runs()} >= set(run_ids)
        for run_id in run_ids:
            assert services.audit().verify(run_id).ok
    finally:
        services.close()
