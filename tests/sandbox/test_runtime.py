"""The sandbox runtime: runsc puts gVisor's kernel between the agent and the host's, with the same limits."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from corral.doctor import runtime_check
from corral.errors import SandboxError
from corral.sandbox import DOCKER_RUNTIMES, ExecResult
from corral.sandbox.docker import SELF_TEST, DockerSandbox, host_pids_limit, judge_self_test
from corral.sandbox.nodump import check_nodump, nodump_leaks

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
    """The Docker runtime `runtime = "runsc"` uses: the newer gVisor that `make gvisor` builds.

    It is skipped, never failed, when absent: from an empty Go cache the build takes longer than
    .ci/run can afford, so `make test` runs the runsc tests only where it was built (docs/security.md).
    """
    name = DOCKER_RUNTIMES["runsc"]
    if name not in client.info().get("Runtimes", {}):
        pytest.skip(f"Docker has no {name} runtime (`make gvisor` builds and registers it; `corral doctor`)")
    return name


@pytest.fixture(scope="module")
def debian_runsc(client: docker.DockerClient) -> str:
    """Debian's gVisor (20221219), which .ci/services.sh installs and registers as `runsc`."""
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
    assert gvisor.inspect()["HostConfig"]["Runtime"] == runsc


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


def test_debian_gvisor_ignores_the_dumpable_flag_so_a_run_under_it_fails_closed(
    make_sandbox: Callable[..., DockerSandbox], workspace: Path, debian_runsc: str
) -> None:
    """Why `runsc` is not Debian's: there a tool of Claude Code's uid reads its environ (the run's
    token) and follows its fd links (its stdout carries the hook callbacks), library or not."""
    sandbox = make_sandbox(workspace, runtime=debian_runsc)
    assert {"environ", "fd/0", "fd/1"} <= set(nodump_leaks(sandbox)), "Debian's gVisor now honours the flag"
    with pytest.raises(SandboxError, match=r"non-dumpable.*opened its environ"):
        check_nodump(sandbox)


def test_the_gvisor_corral_uses_honours_the_dumpable_flag(
    make_sandbox: Callable[..., DockerSandbox], workspace: Path, runsc: str
) -> None:
    sandbox = make_sandbox(workspace, runtime=runsc)
    assert nodump_leaks(sandbox) == []
    check_nodump(sandbox)
    # The probe can see a leak under this kernel too: without the library the process is open.
    assert {"environ", "fd/0", "fd/1"} <= set(nodump_leaks(sandbox, preload=False))


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
    client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CORRAL_SANDBOX_RUNTIME", raising=False)
    runtimes = dict(client.info()["Runtimes"])
    runtimes["runsc-corral"] = {"path": "/srv/gvisor/runsc", "runtimeArgs": ["--platform=ptrace"]}
    check = runtime_check(runtimes, "runsc", "/usr/bin/runsc")
    assert check.ok and check.detail.startswith("sandboxes use runsc (runsc-corral); runsc-corral "), check
    assert "(/srv/gvisor/runsc) registered with Docker; Debian's runsc at /usr/bin/runsc" in check.detail
    # Debian's runsc alone is not enough: under it the non-dumpable flag does not hold.
    debian_only = {name: value for name, value in runtimes.items() if name != "runsc-corral"}
    assert "runsc" in debian_only
    check = runtime_check(debian_only, "runsc", "/usr/bin/runsc")
    assert not check.ok and "runsc-corral not registered" in check.detail
    assert "make gvisor" in check.fix and '"--host-uds=open"' in check.fix and '"runsc-corral"' in check.fix
    assert "/etc/docker/daemon.json" in check.fix and "restart" in check.fix
    # runc needs nothing more, and the environment chooses over the config.
    assert runtime_check(debian_only, "runc", None).ok
    monkeypatch.setenv("CORRAL_SANDBOX_RUNTIME", "runsc")
    assert not runtime_check(debian_only, "runc", None).ok
