"""The container's hardening is real: each check runs inside a live sandbox as the agent would."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from corral.errors import SandboxError
from corral.sandbox import CLAUDE_CODE_LABEL, PURPOSE_LABEL, RUN_LABEL
from corral.sandbox.docker import DockerSandbox, host_pids_limit, start_host_probe

from .conftest import PIN, READONLY_CANARY, RUNTIME, SECRET_CANARY, UnixEchoServer, host_cgroup

pytestmark = pytest.mark.docker


def sh(sandbox: DockerSandbox, script: str) -> tuple[int, str]:
    result = sandbox.exec(["sh", "-c", script])
    return result.exit_code, result.output


def test_runs_as_uid_1000_with_no_capabilities_and_no_new_privileges(sandbox: DockerSandbox) -> None:
    code, out = sh(
        sandbox, "id -u; id -g; grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status"
    )
    assert code == 0, out
    lines = out.split("\n")
    assert lines[:2] == ["1000", "1000"]
    status = dict(line.split(":\t") for line in lines[2:] if line)
    # gVisor's /proc/self/status has no CapAmb or NoNewPrivs line; prctl answers under both kernels.
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd") + (() if sandbox.spec.gvisor else ("CapAmb",)):
        assert int(status[cap], 16) == 0, f"{cap} = {status[cap]}"
    if not sandbox.spec.gvisor:
        assert status["NoNewPrivs"].strip() == "1"
    prctl = (
        "import ctypes; libc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.prctl(39, 0, 0, 0, 0))\n"  # PR_GET_NO_NEW_PRIVS
        "print(set(libc.prctl(47, 1, cap, 0, 0) for cap in range(41)))\n"  # PR_CAP_AMBIENT_IS_SET
    )
    result = sandbox.exec(["python3", "-c", prctl])
    # Debian's gVisor has no ambient set (EINVAL, -1); newer gVisor has one, and it is empty (0).
    no_new_privs, ambient = result.output.split("\n")[:2]
    assert no_new_privs == "1", result.output
    assert ambient in (("{-1}", "{0}") if sandbox.spec.gvisor else ("{0}",)), result.output


def test_root_filesystem_is_read_only(sandbox: DockerSandbox) -> None:
    for target in ("/usr/x", "/etc/x", "/x", "/var/x", "/run/corral-x"):
        code, out = sh(sandbox, f"echo pwned > {target}")
        assert code != 0, f"wrote {target}"
        assert "Read-only file system" in out or "Permission denied" in out, out


def test_writes_outside_the_workspace_do_not_reach_the_host(sandbox: DockerSandbox, workspace: Path) -> None:
    code, out = sh(sandbox, "echo pwned > /workspace/../escape; echo pwned > /etc/passwd")
    assert code != 0
    assert not (workspace.parent / "escape").exists()
    # Scratch space exists only inside the container.
    code, out = sh(sandbox, "echo ok > /tmp/scratch && echo ok > $HOME/.note && cat /tmp/scratch $HOME/.note")
    assert (code, out) == (0, "ok\nok\n")


def test_read_only_paths_refuse_writes_while_the_rest_of_the_workspace_is_writable(
    sandbox: DockerSandbox, workspace: Path
) -> None:
    attempts = [
        "echo 'RATE = 0' > billing/rates.py",
        "echo x > billing/new.py",
        "rm -f billing/rates.py",
        "mv billing billing2",
        "echo 'mode: dev' > config.yaml",
        "echo x > conf/public.yaml",
        "echo 'gitdir: /tmp/evil' > .git",
    ]
    for attempt in attempts:
        code, out = sh(sandbox, attempt)
        assert code != 0, f"{attempt!r} succeeded: {out}"
    assert READONLY_CANARY in (workspace / "billing" / "rates.py").read_text()
    assert READONLY_CANARY in (workspace / "config.yaml").read_text()
    assert not (workspace / "billing" / "new.py").exists()
    assert (workspace / ".git").read_text().startswith("gitdir: /srv/repo")

    code, out = sh(sandbox, "echo 'print(2)' > src/app.py && mkdir -p src/pkg && echo x > src/pkg/new.py")
    assert code == 0, out
    assert (workspace / "src" / "app.py").read_text() == "print(2)\n"
    assert (workspace / "src" / "pkg" / "new.py").read_text() == "x\n"


def test_hidden_paths_show_no_content(sandbox: DockerSandbox, workspace: Path) -> None:
    for path in ("secrets/prod.key", ".env", "conf/private.env"):
        code, out = sh(sandbox, f"cat {path}")
        assert SECRET_CANARY not in out
        assert code != 0 or out == "", f"{path}: {out}"
    code, out = sh(sandbox, "python3 -c 'import os; print(os.listdir(\"secrets\"))'")
    assert (code != 0 and "Error" in out) or out.strip() == "[]", out
    # Nothing anywhere the agent can read holds the canary.
    code, out = sh(sandbox, f"grep -r -s -l {SECRET_CANARY} /workspace /tmp /home /run; echo done")
    assert out.strip() == "done", out
    # Masks cannot be written through either, and the host's secrets are untouched.
    code, out = sh(sandbox, "echo leak > secrets/new; echo leak > .env")
    assert code != 0
    assert SECRET_CANARY in (workspace / "secrets" / "prod.key").read_text()
    assert SECRET_CANARY in (workspace / ".env").read_text()


def test_only_loopback_and_the_host_probe_is_unreachable(sandbox: DockerSandbox) -> None:
    probe = start_host_probe()
    try:
        # The probe works: a connection from the host is counted.
        with socket.create_connection(("127.0.0.1", probe.port), timeout=2):
            pass
        deadline = time.monotonic() + 2
        while probe.connections < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert probe.connections == 1
        # Python, not `ls`: Debian's gVisor refuses coreutils 9.1's statx with EINVAL. Newer gVisor has
        # no /sys/class/net at all; there the self-test's netlink and /proc/net/dev views prove it.
        _, out = sh(sandbox, "python3 -c 'import os; print(*os.listdir(\"/sys/class/net\"))'")
        if not (sandbox.spec.gvisor and "FileNotFoundError" in out):
            assert out.split() == ["lo"], out
        report = sandbox.self_test(probe.port)
    finally:
        seen = probe.stop()
    assert report.passed, report.detail
    assert report.interfaces == ("lo",)
    assert report.host_probe in ("refused", "timeout") or report.host_probe.startswith("error")
    assert seen == 1, "the sandbox reached the host probe"


def test_no_docker_socket(sandbox: DockerSandbox) -> None:
    probe = "import os\nfor p in ('/var/run/docker.sock', '/run/docker.sock'): print(os.path.lexists(p))"
    code, out = sh(sandbox, f'python3 -c "{probe}"')
    assert (code, out.split()) == (0, ["False", "False"]), out
    mounts = sandbox.inspect()["Mounts"]
    assert not [m for m in mounts if "docker.sock" in m["Source"] or "docker.sock" in m["Destination"]]


def test_no_host_environment(
    make_sandbox: Callable[..., DockerSandbox], workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_HOST_CANARY", "host-env-canary-77d1")
    sandbox = make_sandbox(workspace)
    code, out = sh(sandbox, "env; cat /proc/1/environ | tr '\\0' '\\n'")
    assert code == 0
    assert "host-env-canary-77d1" not in out
    assert "sk-ant-canary" not in out  # the suite's canary ANTHROPIC_API_KEY lives in the host env
    assert "ANTHROPIC" not in out
    assert "CORRAL_RUN=yes" in out


def test_no_way_to_root(sandbox: DockerSandbox, client: docker.DockerClient, agent_image: str) -> None:
    code, out = sh(sandbox, "find / -xdev -perm /6000 -type f 2>/dev/null; echo end")
    assert out.strip() == "end", out
    code, out = sh(sandbox, "su -c id root </dev/null; sudo id </dev/null")
    assert code != 0 and "uid=0" not in out
    # Scan the image as root too (the agent cannot read every directory): no setuid/setgid file.
    found = client.containers.run(
        agent_image,
        ["find", "/", "-xdev", "-perm", "/6000", "-type", "f"],
        user="0",
        network_mode="none",
        remove=True,
    )
    assert found.decode().strip() == ""


def test_limits_and_settings_are_applied(sandbox: DockerSandbox) -> None:
    attrs = sandbox.inspect()
    host = attrs["HostConfig"]
    assert host["Runtime"] == RUNTIME
    assert host["PidsLimit"] == host_pids_limit(sandbox.spec)
    assert host["Memory"] == 1 << 30
    assert host["NanoCpus"] == 1_000_000_000
    assert host["NetworkMode"] == "none"
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True and host["Privileged"] is False
    assert host["Init"] is True
    assert attrs["Config"]["User"] == "1001:1001"  # the bridges; every exec names uid 1000
    assert attrs["Config"]["Labels"][RUN_LABEL].startswith("test-sandbox-")
    assert attrs["Config"]["Labels"][PURPOSE_LABEL] == "agent"
    # The limits live in the container's host cgroup, which holds every host task of the sandbox
    # (under gVisor: the Sentry, the gofer and each agent task); gVisor shows the agent no cgroupfs.
    assert int(host_cgroup(sandbox, "pids", "pids.max")) == host["PidsLimit"]
    assert int(host_cgroup(sandbox, "memory", "memory.limit_in_bytes")) == 1 << 30
    assert host_cgroup(sandbox, "cpu", "cpu.cfs_quota_us") == "100000"  # one cpu per 100 ms period
    if not sandbox.spec.gvisor:
        _, out = sh(sandbox, "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max")
        assert out.strip() == "256"
    modes = (
        "import os\nfor p in (os.environ['HOME'], '/tmp'):"
        " s = os.stat(p); print(s.st_uid, oct(s.st_mode)[-4:].lstrip('0'))"
    )
    _, out = sh(sandbox, f"python3 -c \"{modes}\"; mount | grep -E ' on (/tmp|/home/agent) '")
    assert out.splitlines()[:2] == ["1000 700", "0 1777"]
    assert "tmpfs" in out
    # gVisor's mount table does not list nosuid; no-new-privileges (prctl, above) holds under both.
    assert "nosuid" in out or sandbox.spec.gvisor


def test_socat_bridge_reaches_a_host_unix_socket(
    make_sandbox: Callable[..., DockerSandbox], workspace: Path
) -> None:
    socket_dir = Path(tempfile.mkdtemp(prefix="cs", dir="/tmp"))
    server = UnixEchoServer(socket_dir / "echo.sock")
    try:
        with pytest.raises(SandboxError, match="cannot be entered"):
            make_sandbox(workspace, socket_dir=socket_dir, bridges={18080: "echo.sock"})
        socket_dir.chmod(0o755)
        sandbox = make_sandbox(workspace, socket_dir=socket_dir, bridges={18080: "echo.sock"})
        script = (
            "import socket\n"
            "s = socket.create_connection(('127.0.0.1', 18080), timeout=5)\n"
            "s.sendall(b'ping')\n"
            "print(s.recv(100).decode())\n"
        )
        result = sandbox.exec(["python3", "-c", script])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == "echo:ping"
        assert server.served == 1
        # The socket directory is bound read-only: the agent cannot plant or remove a socket.
        code, _ = sh(sandbox, "rm -f /run/corral/echo.sock; touch /run/corral/x")
        assert code != 0 and (socket_dir / "echo.sock").exists()
    finally:
        server.close()
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_claude_code_runs_inside_as_the_agent(sandbox: DockerSandbox, agent_image: str) -> None:
    result = sandbox.exec(["claude", "--version"], env={"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"})
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{PIN} (Claude Code)"
    code, out = sh(sandbox, "rg --version && rg -l hello src")
    assert code == 0 and out.startswith("ripgrep") and "src/app.py" in out


def test_image_is_labelled_with_the_claude_code_version(
    client: docker.DockerClient, agent_image: str
) -> None:
    assert client.images.get(agent_image).labels[CLAUDE_CODE_LABEL] == PIN
    assert client.images.get(f"corral/agent:cc-{PIN}").id == client.images.get(agent_image).id


def test_exec_timeout_and_exec_command(sandbox: DockerSandbox) -> None:
    started = time.monotonic()
    result = sandbox.exec(["sleep", "30"], timeout=0.5)
    assert result.exit_code == 124
    assert time.monotonic() - started < 20
    argv = sandbox.exec_command(["sh", "-c", 'echo "$GREETING"; id -u; pwd'], env={"GREETING": "hi there"})
    assert argv[:3] == ["docker", "exec", "-i"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["hi there", "1000", "/workspace"]


def test_stop_ends_a_running_exec(sandbox: DockerSandbox) -> None:
    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(sandbox.exec(["sleep", "300"]).exit_code))
    thread.start()
    deadline = time.monotonic() + 30
    while sandbox.exec(["pgrep", "-x", "sleep", "-a"]).output.count("sleep 300") == 0:
        assert time.monotonic() < deadline, "the exec never started"
        time.sleep(0.05)
    sandbox.stop(timeout=1)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert results and results[0] != 0  # killed, not finished
    assert sandbox.inspect()["State"]["Running"] is False
