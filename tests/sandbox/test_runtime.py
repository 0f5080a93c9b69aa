"""The sandbox runtime: runsc puts gVisor's kernel between the agent and the host's, with the same limits."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from corral.doctor import runtime_check
from corral.errors import SandboxError
from corral.sandbox import ExecResult
from corral.sandbox.docker import SELF_TEST, DockerSandbox, host_pids_limit, judge_self_test

from .conftest import host_cgroup

pytestmark = pytest.mark.docker

FORK_BOMB = """
import os, sys, time
children = []
for _ in range(int(sys.argv[1])):
    try:
        pid = os.fork()
    except OSError as exc:
        print("refused after", len(children), exc.strerror)
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children.append(pid)
else:
    print("never refused", len(children))
for pid in children:
    os.kill(pid, 9)
"""


@pytest.fixture(scope="module")
def runsc(client: docker.DockerClient) -> str:
    if "runsc" not in client.info().get("Runtimes", {}):
        message = "Docker has no runsc runtime (.ci/services.sh registers it; see `corral doctor`)"
        if os.environ.get("CORRAL_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return "runsc"


def test_runsc_sandbox_sees_gvisors_kernel_not_the_hosts(
    make_sandbox: Callable[..., DockerSandbox], workspace: Path, runsc: str
) -> None:
    gvisor = make_sandbox(workspace, runtime=runsc)
    runc = make_sandbox(workspace, runtime="runc")
    host = os.uname()
    for sandbox, is_host in ((runc, True), (gvisor, False)):
        result = sandbox.exec(["sh", "-c", "uname -r; uname -v; dmesg 2>&1 | head -n 1"])
        release, version, first_log = result.output.splitlines()[:3]
        assert ((release, version) == (host.release, host.version)) is is_host, result.output
        assert ("Starting gVisor" in first_log) is not is_host, first_log
    assert gvisor.inspect()["HostConfig"]["Runtime"] == "runsc"


def test_self_test_refuses_a_runsc_name_that_is_not_gvisor(
    make_sandbox: Callable[..., DockerSandbox], workspace: Path
) -> None:
    """The self-test's output of a real runc container, judged as if it claimed to be gVisor."""
    sandbox = make_sandbox(workspace, runtime="runc")
    result = sandbox.exec(["python3", "-c", SELF_TEST, "9"], timeout=20)
    data = json.loads(result.output.strip().splitlines()[-1])
    interfaces, problems = judge_self_test(data, gvisor=False)
    assert (interfaces, problems) == (("lo",), [])
    _, problems = judge_self_test(data, gvisor=True)
    assert problems == ["the runtime is gVisor's by name, but the kernel log is not gVisor's"]
    # A view that lists nothing, or another interface, is a failure, never a pass.
    for view in ("netlink", "procfs"):
        altered = {**data, "sources": {**data["sources"], view: ["eth0", "lo"]}}
        expected = f"{view} lists interfaces besides loopback: eth0, lo"
        assert judge_self_test(altered, gvisor=False)[1] == [expected]
        missing = {**data, "sources": {k: v for k, v in data["sources"].items() if k != view}}
        assert judge_self_test(missing, gvisor=False)[1] == [f"no interface list from {view}"]


def test_runsc_self_test_passes_on_gvisors_kernel(
    make_sandbox: Callable[..., DockerSandbox], workspace: Path, runsc: str
) -> None:
    sandbox = make_sandbox(workspace, runtime=runsc)
    result = sandbox.exec(["python3", "-c", SELF_TEST, "9"], timeout=20)
    data = json.loads(result.output.strip().splitlines()[-1])
    assert {"netlink", "procfs"} <= set(data["sources"])
    assert judge_self_test(data, gvisor=True) == (("lo",), [])


def exec_unless_the_sandbox_dies(
    sandbox: DockerSandbox, client: docker.DockerClient, argv: list[str]
) -> ExecResult | None:
    """The exec's result; None when the whole sandbox ended instead, which only gVisor's may do: its
    Sentry dies when the host cgroup refuses it a thread or memory, and a `docker exec` into a dead
    Sentry may never return, so the exec runs on a thread."""
    results: list[ExecResult] = []
    thread = threading.Thread(target=lambda: results.append(sandbox.exec(argv, timeout=60)), daemon=True)
    thread.start()
    thread.join(timeout=120)
    container = client.containers.get(sandbox.id)
    if results and container.status == "running" and "containerManager" not in results[0].output:
        return results[0]
    outcome = container.wait(timeout=30)
    assert sandbox.spec.gvisor, (outcome, results)
    return None


def test_a_fork_bomb_stays_inside_the_pids_limit(
    make_sandbox: Callable[..., DockerSandbox], workspace: Path, client: docker.DockerClient
) -> None:
    """Under either runtime the agent cannot hold more tasks than the host cgroup allows."""
    sandbox = make_sandbox(workspace, pids=64)
    limit = host_pids_limit(sandbox.spec)
    assert int(host_cgroup(sandbox, "pids", "pids.max")) == limit
    result = exec_unless_the_sandbox_dies(sandbox, client, ["python3", "-c", FORK_BOMB, str(limit + 100)])
    if result is not None:
        # Forks past the limit were refused, and fewer tasks than the limit ever ran.
        assert "refused after" in result.output, result.output
        started = int(result.output.split("refused after")[1].split()[0])
        assert 0 < started < limit, result.output


def test_memory_beyond_the_limit_is_refused(
    make_sandbox: Callable[..., DockerSandbox], workspace: Path, client: docker.DockerClient
) -> None:
    sandbox = make_sandbox(workspace, memory="256m")
    grab = "b = bytearray(512 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('allocated')"
    result = exec_unless_the_sandbox_dies(sandbox, client, ["python3", "-c", grab])
    if result is not None:  # the kernel killed the process, not the sandbox
        assert "allocated" not in result.output
        assert result.exit_code != 0


def test_a_runtime_docker_lacks_names_the_fix(
    make_sandbox: Callable[..., DockerSandbox], workspace: Path
) -> None:
    with pytest.raises(SandboxError, match="no runtime 'runsc-absent'") as caught:
        make_sandbox(workspace, runtime="runsc-absent")
    assert "corral doctor" in (caught.value.hint or "")


def test_doctor_reports_runsc_and_says_how_to_register_it(
    client: docker.DockerClient, runsc: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CORRAL_SANDBOX_RUNTIME", raising=False)
    runtimes = client.info()["Runtimes"]
    check = runtime_check(runtimes, "runsc", shutil.which("runsc"))
    assert check.ok and check.detail.startswith("sandboxes use runsc; runsc at "), check
    assert "registered with Docker" in check.detail and "not registered" not in check.detail
    unregistered = {name: value for name, value in runtimes.items() if not name.startswith("runsc")}
    check = runtime_check(unregistered, "runsc", shutil.which("runsc"))
    assert not check.ok and "not registered" in check.detail
    assert (
        '"--host-uds=open"' in check.fix and "/etc/docker/daemon.json" in check.fix and "restart" in check.fix
    )
    # runc needs nothing more, and the environment chooses over the config.
    assert runtime_check(unregistered, "runc", None).ok
    monkeypatch.setenv("CORRAL_SANDBOX_RUNTIME", "runsc")
    assert not runtime_check(unregistered, "runc", None).ok
