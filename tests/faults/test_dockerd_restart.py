"""The Docker daemon restarts in the middle of a real run. Opt-in (it takes minutes and needs root):

    CORRAL_TEST_DOCKERD_RESTART=1 .venv/bin/pytest -m dockerd_restart tests/faults/test_dockerd_restart.py

It never touches the host's own Docker Engine, which other tests (and other people) are using: it
starts a private dockerd of its own (its own socket, data root, exec root and bridge, no iptables),
loads the agent image into it from the host's engine, and restarts that one. The run must
end recorded as failed, its chain must verify, and `corral gc` must find and remove what is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from corral.audit.log import AuditLog
from corral.config import DEFAULT_IMAGE
from corral.sandbox import RUN_LABEL
from corral.settings import Settings
from tests.e2e.conftest import leftovers, make_repo, stored_run

pytestmark = [
    pytest.mark.docker,
    pytest.mark.dockerd_restart,
    pytest.mark.skipif(
        os.environ.get("CORRAL_TEST_DOCKERD_RESTART") != "1",
        reason="restarts a Docker daemon: opt in with CORRAL_TEST_DOCKERD_RESTART=1",
    ),
]

ROOT = Path("/tmp/cfdk")  # short: the daemon's socket path
BRIDGE = "cfdk0"
"""The private daemon's own bridge. Never `--bridge=none`: a dockerd started so deletes the host's
docker0, which the host's own Engine needs for every container with a network."""
DATA = Path("/var/tmp/corral-faults-docker")  # kept between runs: the image is loaded once
SLOW = (
    "turns:\n"
    "  - tool_use: [{name: Bash, input: "
    "{command: 'python3 -c \"import time; time.sleep(120)\"', timeout: 600000}}]\n"
    "  - text: done\n"
)


class PrivateDockerd:
    """A dockerd this test starts, restarts and stops; nothing else uses it."""

    def __init__(self) -> None:
        ROOT.mkdir(exist_ok=True)
        self.socket = ROOT / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0:
            subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
            subprocess.run(["ip", "addr", "add", "10.251.0.1/24", "dev", BRIDGE], check=True)
            subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
        argv = [
            "dockerd", "--host", self.url, "--data-root", str(DATA), "--exec-root", str(ROOT / "exec"),
            "--pidfile", str(ROOT / "docker.pid"), f"--bridge={BRIDGE}", "--iptables=false",
            "--ip6tables=false", "--ip-masq=false",
        ]  # fmt: skip
        log = open(ROOT / "dockerd.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                docker.DockerClient(base_url=self.url, timeout=5).ping()
                return
            except docker.errors.DockerException:
                assert self.proc.poll() is None, f"dockerd exited; see {ROOT / 'dockerd.log'}"
                time.sleep(0.5)
        raise AssertionError(f"the private dockerd did not answer; see {ROOT / 'dockerd.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(120)

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=120)


@pytest.fixture
def dockerd(agent_image: str, docker_client: Any) -> Iterator[PrivateDockerd]:
    daemon = PrivateDockerd()
    daemon.start()
    try:
        client = daemon.client()
        wanted = [
            DEFAULT_IMAGE,
            *(t for t in docker_client.images.get(DEFAULT_IMAGE).tags if t != DEFAULT_IMAGE),
        ]
        if not all(client.images.list(name=tag) for tag in wanted):
            save = subprocess.Popen(["docker", "save", *wanted], stdout=subprocess.PIPE)
            subprocess.run(
                ["docker", "-H", daemon.url, "load"], stdin=save.stdout, check=True, capture_output=True
            )
            assert save.wait(300) == 0
        yield daemon
    finally:
        daemon.stop()
        subprocess.run(["ip", "link", "delete", BRIDGE], check=False)


def _wait_for_tool_call(settings: Settings, needle: str, proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, "corral run ended before its tool call started"
        with AuditLog.open(settings, allow_offline=True, background=False) as audit:
            for run in audit.runs():
                calls = [e for e in audit.read(run.run_id) if e.kind == "tool.call"]
                if any(needle in str(c.input.get("command", "")) for c in calls):
                    return run.run_id
        time.sleep(0.5)
    raise AssertionError(f"the run never started the tool call {needle!r}")


def test_a_dockerd_restart_mid_run_ends_it_recorded_and_gc_removes_the_rest(
    dockerd: PrivateDockerd, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "r", {"a.txt": "a\n"}, "[checks]\ncommand = 'true'\n")
    (tmp_path / "p.yaml").write_text(SLOW)
    env = {**os.environ, "DOCKER_HOST": dockerd.url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "run", "sleep", "--repo", str(repo), "--playbook",
         str(tmp_path / "p.yaml")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    settings = Settings()
    run_id = _wait_for_tool_call(settings, "time.sleep(120)", proc)

    dockerd.stop()  # the daemon goes away mid-tool-call, taking its containers with it
    dockerd.start()
    out, err = proc.communicate(timeout=300)  # the run ends on its own, well before the 120 s sleep
    print(out[-2000:], err[-4000:])

    result = stored_run(settings, run_id)
    assert result.record.phase == "failed", result.record.phase
    print("failure_reason:", result.record.failure_reason)
    # A clear, recorded failure: not an internal error from an Engine call that was cut off.
    assert "internal error" not in result.record.failure_reason and "Traceback" not in err
    assert proc.returncode == 1
    assert result.events[-1].kind == "run.finished" and result.events[-1].phase == "failed"
    assert [e.seq for e in result.events] == list(range(1, len(result.events) + 1))
    sleeping = [c for c in result.of("tool.call") if "time.sleep(120)" in c.input.get("command", "")]
    assert len(sleeping) == 1  # durable before it ran, and not lost with the daemon

    gc = subprocess.run(
        [sys.executable, "-m", "corral", "gc", "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert gc.returncode == 0, gc.stderr
    print("gc:", gc.stdout)
    client = dockerd.client()
    assert client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"}) == []
    assert leftovers(docker.DockerClient(base_url=dockerd.url), settings, run_id) == []
    with AuditLog.open(settings, background=False) as audit:
        report = audit.verify(run_id, strict=True)
    assert report.ok, report.summary()
    assert json.loads(gc.stdout)["team"] == "default"
