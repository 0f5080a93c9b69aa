"""Runs through a real `corral server` process: `corral run --server` follows a real sandboxed run, and
a server killed mid-run loses nothing it accepted: the next start marks the run failed and removes
its container."""

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

from corral.demo import DEMO_CONFIG, DEMO_FILES, DEMO_TASK, demo_playbook_path
from corral.gc import ORPHAN_REASON
from corral.settings import Settings
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
