"""Runs through a warm pool: the isolation scene of test_isolation.py again, on claimed containers,
and `corral server --warm 1` as a process: its runs start warm, Ctrl-C removes its pool, and after a
SIGKILL `corral gc` does.

The tests of test_isolation.py are imported so that they run here too, against the `scene` fixture
below, whose run claimed both its sandboxes (agent and checks) from a real pool.
"""

# ruff: noqa: F401  (the isolation tests are imported to be collected, and run, here)
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import pytest

from corral.demo import DEMO_CONFIG, DEMO_FILES, DEMO_TASK, demo_playbook_path
from corral.runs import RunOrchestrator, RunRequest
from corral.sandbox import POOL_LABEL
from corral.sandbox.hostmount import mount_points
from corral.services import Services
from corral.settings import Settings
from corral.web.serve import start_pool
from tests.conftest import CANARY_KEY
from tests.e2e.conftest import make_repo, stored_run
from tests.e2e.test_isolation import (
    CONFIG,
    RATES,
    SECRET,
    HostProbe,
    Scene,
    _playbook,
    test_a_request_for_an_unpinned_model_is_refused_and_recorded,
    test_each_escape_attempt_fails_and_is_audited,
    test_hidden_content_never_reaches_the_agent,
    test_host_loopback_server_saw_no_connection,
    test_readonly_edit_is_denied_by_the_hook_and_canaries_are_unchanged,
    test_the_run_completes_and_leaves_nothing,
)
from tests.e2e.test_server_runs import CORRAL, _corral, _free_port
from tests.processes import stacks_then_kill

pytestmark = pytest.mark.docker
FILL_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def scene(agent_image: str, docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    with pytest.MonkeyPatch.context() as env:
        for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
            env.delenv(name, raising=False)
        env.setenv("ANTHROPIC_API_KEY", CANARY_KEY)
        home = Path(tempfile.mkdtemp(prefix="cw", dir="/tmp"))
        env.setenv("CORRAL_HOME", str(home))
        base = tmp_path_factory.mktemp("iso-warm")
        host_canary = base / "host-canary.txt"
        host_canary.write_text("untouched\n")
        files = {"app.py": "x = 1\n", "billing/rates.py": RATES, "secrets/key.txt": SECRET + "\n"}
        repo = make_repo(base / "repo", {**files, ".env": f"TOKEN={SECRET}\n"}, CONFIG)
        probe = HostProbe()
        playbook = base / "attempts.yaml"
        playbook.write_text(_playbook(probe.port))
        settings = Settings(home=home)
        services = Services(settings)
        services.warm_pool = start_pool(services, 1)
        try:
            assert services.warm_pool.wait_full(FILL_TIMEOUT), services.warm_pool.errors
            request = RunRequest(task="try to escape", repo=repo, playbook=playbook)
            run_id = RunOrchestrator(services).run(request)
            claimed = services.warm_pool.claimed
        finally:
            services.warm_pool.close()
            services.close()
        result = stored_run(settings, run_id)
        assert claimed == 2, "both the agent's and the checks' sandbox must come from the pool"
        yield Scene(result, repo, probe, host_canary)
        probe.sock.close()


def test_every_sandbox_of_the_warm_run_was_claimed_and_is_gone(scene: Scene, docker_client: Any) -> None:
    created = scene.result.of("sandbox.created")
    assert [(c.purpose, c.warm) for c in created] == [("agent", True), ("checks", True)]
    for event in created:
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(event.container_id)
    # The run's self-test and non-dumpable check ran on the claimed container itself.
    assert scene.result.of("sandbox.selftest")[0].passed
    home = scene.result.settings.home
    assert not [p for p in mount_points() if p.startswith(str(home))]


def _pooled(client: Any, home: Path) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": [POOL_LABEL, f"io.corral.owner={home}"]}))


def _server_log(home: Path) -> Path:
    return home / "test-server.stderr"


def _start_server(port: int, home: Path) -> subprocess.Popen[str]:
    # Its stderr goes to a file, not an undrained pipe, which a chatty server would fill and block on.
    with _server_log(home).open("a") as log:
        proc = subprocess.Popen(
            [*CORRAL, "server", "--listen", f"127.0.0.1:{port}", "--warm", "1"],
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/login", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("corral server --warm 1 did not come up")


def _stop(proc: subprocess.Popen[str], signum: int, home: Path) -> int:
    """Signal the server and wait for it; a server that does not stop fails with what it printed."""
    proc.send_signal(signum)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        stacks_then_kill(proc)  # the stacks go to its log, with everything it printed
        stderr = _server_log(home).read_text()[-12000:]
        pytest.fail(f"corral server did not stop within 60 s of signal {signum}; its stderr:\n{stderr}")


def _wait_pooled(client: Any, home: Path, count: int) -> list[Any]:
    deadline = time.monotonic() + FILL_TIMEOUT
    while len(running := [c for c in _pooled(client, home) if c.status == "running"]) < count:
        assert time.monotonic() < deadline, "the pool did not fill"
        time.sleep(0.2)
    return running


def test_a_warm_server_runs_warm_refills_and_removes_its_pool_on_stop_and_gc_after_a_kill(
    agent_image: str, docker_client: Any, tmp_path: Path
) -> None:
    home = Path(os.environ["CORRAL_HOME"])
    assert _corral("user", "add", "alice", "--role", "approver", "--password", "pw").returncode == 0
    headers = {"Authorization": f"Bearer {_corral('user', 'token', 'alice').stdout.strip()}"}
    port = _free_port()
    proc = _start_server(port, home)
    try:
        before = {c.id for c in _wait_pooled(docker_client, home, 2)}  # agent and checks
        repo = make_repo(tmp_path / "demo", DEMO_FILES, DEMO_CONFIG)
        body = {"repo": str(repo), "task": DEMO_TASK, "playbook": str(demo_playbook_path())}
        accepted = httpx.post(f"http://127.0.0.1:{port}/api/runs", json=body, headers=headers, timeout=120)
        assert accepted.status_code == 201, accepted.text
        run_id = accepted.json()["run_id"]
        deadline = time.monotonic() + 300
        while (record := httpx.get(f"http://127.0.0.1:{port}/api/runs/{run_id}", headers=headers).json())[
            "phase"
        ] not in ("awaiting_approval", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert record["phase"] == "awaiting_approval", record["failure_reason"]
        assert record["container_id"] in before  # the agent ran in a container made before the submission
        events = stored_run(Settings(home=home), run_id).of("sandbox.created")
        assert {e.container_id for e in events} <= before and all(e.warm for e in events)
        after = {c.id for c in _wait_pooled(docker_client, home, 2)}
        assert after and not after & before  # refilled with new containers; the used ones are gone
        assert _stop(proc, signal.SIGINT, home) == 0
        assert _pooled(docker_client, home) == []
        assert not [p for p in mount_points() if p.startswith(str(home))]
        # A service manager's stop (SIGTERM) removes the pool as Ctrl-C does.
        proc = _start_server(port, home)
        _wait_pooled(docker_client, home, 2)
        assert _stop(proc, signal.SIGTERM, home) == 0
        assert _pooled(docker_client, home) == []
        # A server killed outright leaves its pool behind; gc finds it, since its process is gone.
        proc = _start_server(port, home)
        _wait_pooled(docker_client, home, 2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert _pooled(docker_client, home)
        gc = _corral("gc", "--json")
        assert gc.returncode == 0, gc.stderr
        assert _pooled(docker_client, home) == []
        assert not [p for p in mount_points() if p.startswith(str(home / "warm") + "/")]
    finally:
        if proc.poll() is None:
            proc.kill()
