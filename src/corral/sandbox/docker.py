"""The Docker backend: one locked-down container per run (DESIGN invariants 1-3).

The container has no network (`network_mode="none"`), no capabilities, no-new-privileges, a
read-only root, tmpfs /tmp and HOME, pids/memory/cpu limits, and exactly the environment in the
spec. The only way out is the per-run directory of unix sockets, bound read-only at /run/corral and
exposed on 127.0.0.1 ports by socat, which is the container's main process.

Everything exec'd (Claude Code, the agent's tools, checks) runs as uid 1000. The main process and its
socats run as uid 1001, so the agent cannot signal them or open their /proc files, and if a bridge
dies anyway the main process exits and takes the container down: nobody else gets to listen on a
bridge port that Claude Code trusts.

The host side must make those sockets connectable by uid 1001: chmod each socket 0666. The socket
directory is per run and bound only into that run's containers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from corral.errors import EgressError, SandboxError
from corral.sandbox import (
    OWNER_LABEL,
    POOL_LABEL,
    PURPOSE_LABEL,
    RUN_LABEL,
    SOCKETS_IN_CONTAINER,
    ExecResult,
    Sandbox,
    SandboxSpec,
    SelfTestReport,
)
from corral.sandbox.mounts import MountPlan, plan_mounts
from corral.sandbox.probe import start_host_probe
from corral.settings import load_settings
from corral.tail import Tail

AGENT_USER = "1000:1000"
BRIDGE_USER = "1001:1001"
"""The container's main process (the socat bridges): another uid than everything the agent runs."""
EXEC_OUTPUT_LIMIT = 1 << 20
"""How much of an exec's combined output the host keeps: the last MiB; the rest is counted, not held."""
HOST_PID_LABEL = "io.corral.host-pid"
MASK_DIR_LABEL = "io.corral.mask-dir"
READY_LINE = "corral-ready"
_SOCKET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_BRIDGE_WAIT_SECONDS = 10.0
GVISOR_PIDS_HEADROOM = 128
"""Host tasks a gVisor sandbox needs beside the agent's own: the Sentry's and gofer's threads (about 60
idle here). The host pids cgroup counts those too, and a Sentry that cannot make a thread dies."""


def host_pids_limit(spec: SandboxSpec) -> int:
    """The pids cgroup limit: the spec's under runc; under gVisor, the spec's plus the Sentry's own tasks.

    With the ptrace platform each agent task is a host task in the same cgroup, so the agent still
    cannot exceed the host limit; reaching it ends the whole sandbox instead of failing one fork.
    """
    return spec.pids + GVISOR_PIDS_HEADROOM if spec.gvisor else spec.pids


def default_mask_root() -> Path:
    """Where per-run empty mask files live on the host: `<corral home>/masks/<container name>/`.

    Under corral's own home rather than a shared /tmp, where another user could plant links.
    """
    return load_settings().home / "masks"


def _container_name(spec: SandboxSpec) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{spec.run_id}-{spec.purpose}")
    return f"corral-{safe}-{secrets.token_hex(3)}"


def bridge_script(bridges: dict[int, str]) -> str:
    """The container's main process (bash): one socat per bridge, wait until all listen, then wait.

    Printing READY_LINE only once every port is in LISTEN state lets `create` return a container
    whose bridges already accept connections. Once one socat ends, the script exits, and with it the
    container: a bridge port is never left free for another listener to take.
    """
    if not bridges:
        return f"echo {READY_LINE}\nexec sleep infinity"
    lines = ["set -u"]
    waits = []
    for port, name in sorted(bridges.items()):
        if not 1 <= port <= 65535:
            raise SandboxError(f"bridge port {port} is not a TCP port", hint="use a port in 1024-65535")
        if not _SOCKET_NAME.match(name):
            raise SandboxError(
                f"bridge socket name {name!r} must be a plain file name (letters, digits, '_', '.', '-')"
            )
        target = shlex.quote(f"UNIX-CONNECT:{SOCKETS_IN_CONTAINER}/{name}")
        listen = f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"
        lines.append(f"socat {listen} {target} & pid{port}=$!")
        # /proc/net/tcp lists 127.0.0.1:port as 0100007F:<PORT hex>, state 0A = LISTEN.
        waits.append((port, f"0100007F:{port:04X} 00000000:0000 0A"))
    for port, needle in waits:
        lines.append(
            f"n=0; until grep -q '{needle}' /proc/net/tcp; do n=$((n+1));"
            f" if [ $n -gt 1000 ] || ! kill -0 $pid{port} 2>/dev/null; then"
            f" echo 'corral-bridge-failed: port {port}'; exit 1; fi; sleep 0.01; done"
        )
    lines += [f"echo {READY_LINE}", "wait -n", "echo 'corral-bridge-died'", "exit 1"]
    return "\n".join(lines)


ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)
"""What a call to the Engine raises: the SDK lets the socket's own errors through (a daemon that
restarts mid-call is a `requests` ConnectionError, not a DockerException)."""


def _wrap(action: str, exc: Exception, container: str | None = None) -> SandboxError:
    where = f" (container {container})" if container else ""
    if isinstance(exc, requests.exceptions.ConnectionError):
        return SandboxError(
            f"{action}{where} failed: the Docker Engine went away ({exc})",
            hint="check that dockerd is running (`docker info`); `corral gc` removes what the run left",
        )
    if isinstance(exc, docker.errors.ImageNotFound):
        return SandboxError(f"{action}: image not found: {exc}", hint="run `corral image build`")
    if isinstance(exc, docker.errors.NotFound):
        return SandboxError(f"{action}{where}: no such container", hint="`corral gc` removes leftovers")
    return SandboxError(
        f"{action}{where} failed: {exc}", hint="check `docker info` and `corral doctor`, then retry"
    )


SELF_TEST = r"""
import json, os, socket, subprocess, sys
port = int(sys.argv[1])
# Three views of the interfaces; gVisor has no /sys/class/net, so the host side decides which must answer.
sources = {}
try:
    sources["sysfs"] = sorted(os.listdir("/sys/class/net"))
except OSError:
    pass
try:
    sources["netlink"] = sorted(name for _, name in socket.if_nameindex())
except OSError:
    pass
try:
    with open("/proc/net/dev") as f:
        sources["procfs"] = sorted(l.split(":")[0].strip() for l in f.read().splitlines()[2:] if ":" in l)
except OSError:
    pass
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(1.0)
try:
    s.connect(("127.0.0.1", port))
    probe = "connected"
except ConnectionRefusedError:
    probe = "refused"
except socket.timeout:
    probe = "timeout"
except OSError as exc:
    probe = "error: " + (exc.strerror or str(exc))
finally:
    s.close()
with open("/proc/net/route") as f:
    routes = [line.split()[0] for line in f.read().splitlines()[1:] if line.strip()]
try:
    kernel = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=5).stdout[:2000]
except (OSError, subprocess.SubprocessError):
    kernel = ""
print(json.dumps({"sources": sources, "probe": probe, "routes": routes, "kernel": kernel}))
"""
GVISOR_BOOT_LINE = re.compile(r"^\[\s*0\.0+\] Starting gVisor\.\.\.$", re.MULTILINE)
"""The first line of gVisor's own kernel log at time zero; a host kernel's log starts `Linux version`."""


def judge_self_test(data: dict[str, Any], gvisor: bool) -> tuple[tuple[str, ...], list[str]]:
    """The interfaces seen and every problem with the self-test's `data`, for a runc or gVisor sandbox.

    The netlink and /proc/net/dev views must answer under both runtimes; /sys/class/net only under
    runc (gVisor does not implement it). Each view that answered must show loopback alone, so a
    missing view can never turn into a pass. Under gVisor the kernel log must be gVisor's: a runtime
    named runsc that is really runc gives no kernel boundary, and the run must not believe it has one.
    """
    sources = {str(k): tuple(str(n) for n in v) for k, v in dict(data["sources"]).items()}
    routes = [str(route) for route in data["routes"]]
    problems = []
    required = ("netlink", "procfs") if gvisor else ("sysfs", "netlink", "procfs")
    missing = [name for name in required if name not in sources]
    if missing:
        problems.append(f"no interface list from {', '.join(missing)}")
    interfaces = tuple(sorted({name for names in sources.values() for name in names}))
    for source, names in sorted(sources.items()):
        if names != ("lo",):
            problems.append(f"{source} lists interfaces besides loopback: {', '.join(names) or 'none'}")
    if routes:
        problems.append(f"routes present: {', '.join(routes)}")
    if gvisor and not GVISOR_BOOT_LINE.match(str(data["kernel"])):
        problems.append("the runtime is gVisor's by name, but the kernel log is not gVisor's")
    return interfaces, problems


STOPPED_POLL_SECONDS = 1.0


@contextlib.contextmanager
def _closed_once_stopped(api: Any, container_id: str, stream: Any) -> Iterator[None]:
    """While an exec streams, close its stream once its container no longer runs. Under gVisor the
    stream of an exec can stay open after the container died (its Sentry gone with it), and a read
    on it would wait forever; under runc the Engine closes it itself and this never acts."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(STOPPED_POLL_SECONDS):
            try:
                running = bool(api.inspect_container(container_id)["State"]["Running"])
            except docker.errors.NotFound:
                running = False
            except ENGINE_ERRORS:
                continue  # the Engine busy or restarting: the exec's own stream says what happened
            if not running:
                with contextlib.suppress(Exception):
                    stream.close()
                return

    watcher = threading.Thread(target=watch, name="corral-exec-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()


class DockerSandbox:
    """One running container. Create it through `DockerBackend.create`."""

    def __init__(
        self, client: docker.DockerClient, container: Any, spec: SandboxSpec, mask_dir: Path
    ) -> None:
        self._client = client
        self._container = container
        self.spec = spec
        self.mask_dir = mask_dir
        self.warm = False
        """Whether it was claimed from a warm pool (corral.sandbox.warm) rather than created for the run."""

    @property
    def id(self) -> str:
        return str(self._container.id)

    def exec(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        max_output: int = EXEC_OUTPUT_LIMIT,
    ) -> ExecResult:
        """Run argv as the agent user in the workdir; stdout and stderr combined, the last
        `max_output` bytes kept (streamed, so a command that prints gigabytes costs no memory).

        With `timeout`, coreutils `timeout` inside the container ends the command (exit code 124),
        since a host-side deadline cannot kill a process started by `docker exec`.
        """
        command = list(argv)
        if timeout is not None:
            command = ["timeout", "--kill-after=2", f"{timeout:.3f}", *command]
        api = self._client.api
        tail = Tail(max_output)
        try:
            exec_id = api.exec_create(
                self.id, command, user=AGENT_USER, workdir=self.spec.workdir, environment=env or None
            )["Id"]
            # The SDK polls the attach socket before each read, so its request timeout does not cut
            # a long, silent command (a test suite); tests/sandbox proves it with a 3 s client.
            stream = api.exec_start(exec_id, stream=True)
            with _closed_once_stopped(api, self.id, stream):
                for chunk in stream:
                    tail.push(chunk)
            try:
                exit_code = api.exec_inspect(exec_id).get("ExitCode")
            except docker.errors.NotFound:
                exit_code = None  # the exec ended with its container (gVisor then forgets it): -1
        except ENGINE_ERRORS as exc:
            raise _wrap(f"exec {argv[:1]}", exc, self.id) from exc
        return ExecResult(int(exit_code if exit_code is not None else -1), tail.text(), tail.dropped)

    def exec_command(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        tty: bool = False,
        passthrough: Sequence[str] = (),
    ) -> list[str]:
        """The `docker exec` argv; `passthrough` names variables docker takes from its own environment,
        so their values never appear in the argv or in a script that holds it."""
        command = ["docker", "exec", "-it" if tty else "-i", "-u", AGENT_USER, "-w", self.spec.workdir]
        for key, value in (env or {}).items():
            command += ["-e", f"{key}={value}"]
        for key in passthrough:
            command += ["-e", key]
        return [*command, self.id, *argv]

    def self_test(self, host_probe_port: int) -> SelfTestReport:
        if host_probe_port in self.spec.bridges:
            # The connection would reach our own bridge, not the host: no verdict, so fail closed.
            detail = f"host probe port {host_probe_port} is also a bridge port; use bridge ports below 32768"
            return SelfTestReport((), "unknown", False, detail)
        result = self.exec(["python3", "-c", SELF_TEST, str(host_probe_port)], timeout=10)
        try:
            data = json.loads(result.output.strip().splitlines()[-1])
            probe = str(data["probe"])
            interfaces, problems = judge_self_test(data, self.spec.gvisor)
        except (ValueError, KeyError, IndexError, TypeError):
            # No verdict is a failed verdict: fail closed.
            detail = f"the self-test printed no result (the image needs python3): {result.output[-300:]!r}"
            return SelfTestReport((), "unknown", False, detail)
        if probe == "connected":
            problems.append(f"a TCP connection to 127.0.0.1:{host_probe_port} succeeded")
        passed = not problems and result.exit_code == 0
        kernel = " (gVisor kernel)" if self.spec.gvisor else ""
        detail = "; ".join(problems) if problems else f"only lo{kernel}; 127.0.0.1:{host_probe_port} {probe}"
        return SelfTestReport(interfaces, probe, passed, detail)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop through the Docker API: it ends every exec'd process, which signals cannot reach."""
        try:
            self._container.stop(timeout=max(0, round(timeout)))
        except docker.errors.NotFound:
            return
        except ENGINE_ERRORS as exc:
            raise _wrap("stop", exc, self.id) from exc

    def remove(self) -> None:
        remove_container(self._client, self.id)
        shutil.rmtree(self.mask_dir, ignore_errors=True)

    def inspect(self) -> dict[str, Any]:
        """The container's `docker inspect` document (for tests and `corral doctor`)."""
        try:
            self._container.reload()
        except ENGINE_ERRORS as exc:
            raise _wrap("inspect", exc, self.id) from exc
        attrs: dict[str, Any] = self._container.attrs
        return attrs


def remove_container(client: docker.DockerClient, container_id: str, mask_root: Path | None = None) -> None:
    """Force-remove a container and its per-run mask directory; a missing container is fine."""
    try:
        container = client.containers.get(container_id)
    except docker.errors.NotFound:
        return
    except ENGINE_ERRORS as exc:
        raise _wrap("look up", exc, container_id) from exc
    mask_dir = (container.labels or {}).get(MASK_DIR_LABEL)
    try:
        container.remove(force=True, v=True)
    except docker.errors.NotFound:
        pass
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        if "already in progress" not in str(exc):
            raise _wrap("remove", exc, container_id) from exc
    # The label is only trusted to name a directory inside the mask root.
    if mask_dir and Path(mask_dir).parent == (mask_root or default_mask_root()):
        shutil.rmtree(mask_dir, ignore_errors=True)


class DockerBackend:
    """SandboxBackend over the local Docker Engine."""

    def __init__(
        self, client: docker.DockerClient, *, mask_root: Path | None = None, owner: str = ""
    ) -> None:
        self._client = client
        self._mask_root = mask_root or default_mask_root()
        self._owner = owner

    def create(self, spec: SandboxSpec) -> DockerSandbox:
        name = _container_name(spec)
        mask_dir = self._mask_root / name
        plan = plan_mounts(spec, mask_dir)
        return self.start_container(spec, name, mask_dir, plan, {RUN_LABEL: spec.run_id})

    def start_container(
        self, spec: SandboxSpec, name: str, mask_dir: Path, plan: MountPlan, labels: dict[str, str]
    ) -> DockerSandbox:
        """Create and start the hardened container with `plan`'s mounts (warm.py brings its own plan)."""
        labels = {
            **labels,
            PURPOSE_LABEL: spec.purpose,
            HOST_PID_LABEL: str(os.getpid()),
            MASK_DIR_LABEL: str(mask_dir),
            OWNER_LABEL: self._owner,
        }
        try:
            container = self._client.containers.create(
                spec.image,
                command=["bash", "-c", bridge_script(spec.bridges)],
                name=name,
                labels=labels,
                user=BRIDGE_USER,
                # Every exec names its own workdir; the bridges need none (uid 1001 may not enter it).
                working_dir="/",
                environment=dict(spec.env),
                network_mode="none",
                runtime=spec.runtime,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                read_only=True,
                tmpfs=plan.tmpfs,
                mounts=plan.mounts,
                init=True,
                ipc_mode="private",
                pids_limit=host_pids_limit(spec),
                mem_limit=spec.memory,
                memswap_limit=spec.memory,
                nano_cpus=int(spec.cpus * 1e9),
                stdin_open=False,
                tty=False,
            )
        except ENGINE_ERRORS as exc:
            shutil.rmtree(mask_dir, ignore_errors=True)
            if "runtime" in str(exc) and spec.runtime != "runc":
                raise SandboxError(
                    f"Docker has no runtime {spec.runtime!r} for the {spec.purpose} container of run"
                    f" {spec.run_id}: {exc}",
                    hint="`corral doctor` says how to install gVisor and register it in"
                    " /etc/docker/daemon.json; or set [sandbox].runtime / CORRAL_SANDBOX_RUNTIME to runc",
                ) from exc
            raise _wrap(f"create the {spec.purpose} container of run {spec.run_id}", exc) from exc
        sandbox = DockerSandbox(self._client, container, spec, mask_dir)
        try:
            container.start()
            if spec.bridges:
                self._wait_ready(container)
        except BaseException as exc:
            # Never leave a half-made container behind, not even on Ctrl-C.
            sandbox.remove()
            if isinstance(exc, ENGINE_ERRORS):
                raise _wrap(f"start the {spec.purpose} container of run {spec.run_id}", exc) from exc
            raise
        return sandbox

    def _wait_ready(self, container: Any) -> None:
        deadline = time.monotonic() + _BRIDGE_WAIT_SECONDS
        polls = 0
        while time.monotonic() < deadline:
            logs = container.logs(stdout=True, stderr=True).decode(errors="replace")
            if READY_LINE in logs:
                return
            polls += 1
            if polls % 10 == 0:  # a dead main process never prints the line: stop waiting
                container.reload()
                if container.status not in ("created", "running"):
                    break
            time.sleep(0.005)
        raise SandboxError(
            f"the socket bridges of container {container.id[:12]} did not start: "
            f"{container.logs().decode(errors='replace').strip()[-500:]!r}",
            hint="check that the image has socat and that the socket directory holds the named sockets",
        )

    def orphans(self, live_run_ids: set[str]) -> list[str]:
        return [cid for cid, run_id in self.run_containers().items() if run_id not in live_run_ids]

    def run_containers(self) -> dict[str, str]:
        try:
            containers = self._client.containers.list(
                all=True, filters={"label": [RUN_LABEL, f"{OWNER_LABEL}={self._owner}"]}
            )
        except ENGINE_ERRORS as exc:
            raise _wrap("list corral containers", exc) from exc
        return {str(c.id): str((c.labels or {}).get(RUN_LABEL, "")) for c in containers}

    def remove_container(self, container_id: str) -> None:
        remove_container(self._client, container_id, self._mask_root)

    def reap_warm(self) -> list[str]:
        """Remove warm containers (corral.sandbox.warm) whose creating process died, and their slots."""
        from corral.gc import pid_alive
        from corral.sandbox.warm import reap_pools

        home = Path(self._owner) if self._owner else load_settings().home
        return reap_pools(self._client, self._owner, home, pid_alive)

    def sweep_masks(self, min_age_seconds: float = 60.0) -> list[Path]:
        """Remove mask directories whose container no longer exists (for `corral gc`).

        Directories younger than `min_age_seconds` are kept: `create` makes one just before its
        container exists.
        """
        if not self._mask_root.is_dir():
            return []
        try:
            names = {
                c.name
                for label in (RUN_LABEL, POOL_LABEL)
                for c in self._client.containers.list(all=True, filters={"label": label})
            }
        except ENGINE_ERRORS as exc:
            raise _wrap("list corral containers", exc) from exc
        removed = []
        for path in self._mask_root.iterdir():
            if path.name in names or time.time() - path.stat().st_mtime < min_age_seconds:
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        return removed


# ---------------------------------------------------------------------------------------------------
# Egress self-test


def run_self_test(sandbox: Sandbox) -> SelfTestReport:
    """The egress self-test before the agent starts; raise EgressError (fail closed) unless it passes.

    It passes only when the container lists no interface but `lo`, its connection to the host
    probe fails, and the probe itself saw no connection.
    """
    probe = start_host_probe()
    try:
        report = sandbox.self_test(probe.port)
    finally:
        seen = probe.stop()
    if seen:
        detail = f"the host probe saw {seen} connection(s); {report.detail}"
        report = SelfTestReport(report.interfaces, report.host_probe, False, detail)
    if not report.passed:
        raise EgressError(
            f"egress self-test failed in container {sandbox.id[:12]}: {report.detail}",
            hint="the sandbox could reach beyond its sockets, so the run stopped before the agent started;"
            " check the Docker network settings (`docker info`) and the image",
        )
    return report
