"""What runs in a sandbox cannot reach the processes that speak for it, nor flood the host.

- the socat bridges run as uid 1001, apart from everything exec'd (uid 1000), and a dead bridge takes
  the whole container down (killed from the host, or dead of a fork that failed at the pids limit),
  so no other process gets its port;
- the preload library makes a process non-dumpable, and an image without it fails the check;
- an exec's output is streamed into a bounded tail: 1.2 GB printed costs the host no memory, and
  Claude Code's stderr is kept as a bounded tail too;
- an image built from an older recipe is not current, so `ensure_images` rebuilds it.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from corral.agent.claude import STDERR_LIMIT, AgentSettings, ClaudeDriver
from corral.agent.policy import PathPolicy
from corral.errors import SandboxError
from corral.sandbox.docker import BRIDGE_USER, EXEC_OUTPUT_LIMIT, DockerBackend, DockerSandbox
from corral.sandbox.images import BASE_IMAGE, RECIPE_LABEL, image_is_current, recipe_hash
from corral.sandbox.nodump import check_nodump, nodump_leaks
from corral.services import Services
from corral.settings import Settings

from .conftest import PIN, UnixEchoServer, spec_for

pytestmark = pytest.mark.docker


@pytest.fixture
def bridged(make_sandbox: Callable[..., DockerSandbox], workspace: Path) -> Iterator[DockerSandbox]:
    socket_dir = Path(tempfile.mkdtemp(prefix="cb", dir="/tmp"))
    socket_dir.chmod(0o755)
    server = UnixEchoServer(socket_dir / "echo.sock")
    try:
        yield make_sandbox(workspace, socket_dir=socket_dir, bridges={18080: "echo.sock", 18081: "echo.sock"})
    finally:
        server.close()


def test_bridges_run_as_uid_1001_and_the_agent_cannot_signal_them(bridged: DockerSandbox) -> None:
    result = bridged.exec(["sh", "-c", "ps -eo uid=,comm= | sort -u; id -u"])
    rows = result.output.split()
    assert rows[rows.index("socat") - 1 : rows.index("socat") + 1] == ["1001", "socat"], result.output
    assert rows[-1] == "1000"
    kill = bridged.exec(["sh", "-c", "kill -9 $(pgrep -x socat)"])
    assert kill.exit_code != 0 and "Operation not permitted" in kill.output
    assert bridged.exec(["pgrep", "-c", "-x", "socat"]).output.strip() == "2"


def _status_once_settled(container: Any) -> str:
    """The container's status once it has stopped running (the Engine notices an exit a little later)."""
    deadline = time.monotonic() + 30
    container.reload()
    while container.status == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
        container.reload()
    return str(container.status)


def test_a_dead_bridge_takes_the_container_down(bridged: DockerSandbox, client: docker.DockerClient) -> None:
    container = client.containers.get(bridged.id)
    socat = bridged.exec(["pgrep", "-x", "socat"]).output.split()
    assert len(socat) == 2, socat
    # As the bridge's own uid, which the agent does not have. Not os.kill from the host: under gVisor
    # `docker top` reports the Sentry's pids, which name other processes on the host. Detached: the
    # exec's stream may outlive the container it ends (under gVisor it can stay open for good).
    client.api.exec_start(
        client.api.exec_create(container.id, ["kill", "-9", socat[0]], user=BRIDGE_USER), detach=True
    )
    assert _status_once_settled(container) == "exited"
    assert "corral-bridge-died" in container.logs().decode()


EXHAUST_PIDS_THEN_CONNECT = """
import os, socket, time
while True:  # every pid the container may have, so socat's next fork fails
    try:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
    except OSError:
        break
for _ in range(3):
    try:
        socket.create_connection(("127.0.0.1", 18080), timeout=2).close()
    except OSError:
        pass
"""


def test_a_bridge_that_dies_of_a_failed_fork_takes_the_container_down(
    make_sandbox: Callable[..., DockerSandbox], workspace: Path, client: docker.DockerClient
) -> None:
    # Without the kill, the agent can still make socat exit: fill the pids limit and connect. Its
    # port must not then be free for the agent's own listener, so the whole container stops.
    socket_dir = Path(tempfile.mkdtemp(prefix="cb", dir="/tmp"))
    socket_dir.chmod(0o755)
    server = UnixEchoServer(socket_dir / "echo.sock")
    try:
        sandbox = make_sandbox(workspace, socket_dir=socket_dir, bridges={18080: "echo.sock"}, pids=64)
        sandbox.exec(["python3", "-c", EXHAUST_PIDS_THEN_CONNECT])
        container = client.containers.get(sandbox.id)
        assert _status_once_settled(container) == "exited"
        logs = container.logs().decode()
        if sandbox.spec.gvisor:
            # gVisor's Sentry needs host threads from the same cgroup: it dies first, and every
            # process of the sandbox, bridge and agent alike, with it (docs/security.md).
            assert "corral-bridge-died" in logs or container.attrs["State"]["ExitCode"] != 0, logs
        else:
            assert "fork()" in logs and "corral-bridge-died" in logs, logs
    finally:
        server.close()


def test_the_preload_library_makes_a_process_non_dumpable(sandbox: DockerSandbox) -> None:
    check_nodump(sandbox)  # passes on corral's image
    assert nodump_leaks(sandbox) == []
    # Without the library the same probe reaches its environ and follows its fd links: the probe can fail.
    plain = nodump_leaks(sandbox, preload=False)
    assert {"environ", "fd/0", "fd/1", "fd/2"} <= set(plain), plain


def test_an_image_without_the_library_fails_closed(backend: DockerBackend, workspace: Path) -> None:
    bare = backend.create(spec_for(workspace, BASE_IMAGE, readonly_paths=(), hidden_paths=()))
    try:
        with pytest.raises(SandboxError, match="non-dumpable") as info:
            check_nodump(bare)
    finally:
        bare.remove()
    assert "FROM corral/agent:default" in (info.value.hint or "")


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_gigabytes_of_output_keep_a_bounded_tail_and_flat_memory(sandbox: DockerSandbox) -> None:
    total = 1200 * 1024 * 1024
    baseline = _rss_bytes()
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = sandbox.exec(["sh", "-c", f"yes corral | head -c {total}; echo; echo the-last-line"])
    finally:
        done.set()
        sampler.join()
    assert result.exit_code == 0
    assert len(result.output.encode()) <= EXEC_OUTPUT_LIMIT
    assert result.output.endswith("\nthe-last-line\n")  # the newest bytes are the ones kept
    assert set(result.output.splitlines()[1:-2]) == {"corral"}
    assert result.dropped_bytes + len(result.output.encode()) == total + len("\nthe-last-line\n")
    # The whole output would be 1.2 GB (twice that decoded); the host keeps a MiB and a few buffers.
    assert peak - baseline < 64 * 1024 * 1024, f"RSS grew by {(peak - baseline) >> 20} MiB"


def test_an_image_from_another_recipe_is_not_current(client: docker.DockerClient, agent_image: str) -> None:
    current = client.images.get(agent_image)
    assert current.labels[RECIPE_LABEL] == recipe_hash() and image_is_current(current, PIN)
    dockerfile = f"FROM {agent_image}\nLABEL {RECIPE_LABEL}=an-older-recipe\n".encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    tag = "corral-test/older-recipe:latest"
    old, _ = client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    try:
        assert not image_is_current(old, PIN)
        assert not image_is_current(current, "9.9.9")
    finally:
        client.images.remove(tag, force=True)


def test_claude_code_stderr_keeps_a_bounded_tail(sandbox: DockerSandbox, tmp_path: Path) -> None:
    settings = AgentSettings(
        model="claude-sonnet-4-5-20250929",
        small_model="claude-haiku-4-5-20251001",
        max_turns=1,
        timeout_seconds=60,
        workdir="/workspace",
        model_url="http://127.0.0.1:7301",
        model_token="corral-run-test",
    )
    services = Services(Settings(home=tmp_path / "home"))
    recorder = services.audit().for_run("test-stderr")
    try:
        driver = ClaudeDriver(sandbox, recorder, PathPolicy("/workspace", (), ()), settings, tmp_path / "w")
    finally:
        recorder.close()
        services.close()
    callback = driver.options().stderr
    assert callback is not None
    line = "x" * 1023
    for n in range(100_000):  # 100 MB of stderr lines, as the SDK hands them over
        callback(f"{n:06d} {line}")
    callback("the last line")
    assert len(driver.stderr.encode()) <= STDERR_LIMIT
    assert driver.stderr.endswith("the last line\n")
