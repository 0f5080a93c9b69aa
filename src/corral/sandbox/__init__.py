"""Isolation: one locked-down container per run, behind a small protocol.

A backend creates sandboxes from a `SandboxSpec`. The spec says everything the container may have:
the workspace (read-write), read-only and hidden paths (enforced by mounts), the host directory of
unix sockets and which 127.0.0.1 ports bridge to them, the limits, and the explicit environment.
Nothing from the host environment is passed through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, get_args

from corral.config import SandboxRuntime
from corral.errors import ConfigError

if TYPE_CHECKING:
    from corral.config import SandboxConfig
    from corral.paths import Protection

RUN_LABEL = "io.corral.run"
PURPOSE_LABEL = "io.corral.purpose"
CLAUDE_CODE_LABEL = "io.corral.claude-code"
OWNER_LABEL = "io.corral.owner"
"""Which corral home created a container: `corral gc` only ever judges its own home's containers."""
POOL_LABEL = "io.corral.pool"
"""On a warm container (corral.sandbox.warm): the pool key it was made for. Labels are fixed at
creation, so a warm container never carries a run label; gc judges it by its host process."""
SOCKETS_IN_CONTAINER = "/run/corral"
AGENT_UID = 1000
"""The uid and gid the agent runs as inside every sandbox; the workspace is handed over to it."""
DOCKER_RUNTIMES: dict[str, str] = {"runc": "runc", "runsc": "runsc-corral"}
"""The Docker runtime each `[sandbox].runtime` runs under. `runsc` is the newer gVisor that `make gvisor`
builds and registers as `runsc-corral`, not Debian's `runsc` (2022): under that one a process of the
agent's uid reads Claude Code's environ and follows its fd links (docs/security.md, "Kernel isolation")."""
GVISOR_RUNTIMES = ("runsc", "runsc-corral", "runsc-kvm")
"""Docker runtime names that put gVisor's kernel in front of the host's (`runsc-kvm` is bench-only)."""


def resolve_runtime(configured: str) -> str:
    """The runtime for this host: `CORRAL_SANDBOX_RUNTIME` if set, else the project's `[sandbox].runtime`."""
    from corral.settings import load_settings

    override = load_settings().sandbox_runtime
    if override is None:
        return configured
    allowed = get_args(SandboxRuntime)
    if override not in allowed:
        raise ConfigError(
            f"CORRAL_SANDBOX_RUNTIME={override!r} is not a sandbox runtime",
            hint=f"set it to one of {', '.join(allowed)}, or unset it to use [sandbox].runtime",
        )
    return override


def docker_runtime(configured: str) -> str:
    """The Docker runtime name for the project's `[sandbox].runtime` (or `CORRAL_SANDBOX_RUNTIME`)."""
    return DOCKER_RUNTIMES[resolve_runtime(configured)]


NODUMP_LIBRARY = "/usr/local/lib/corral/nodump.so"
"""In the agent image: preloaded into Claude Code to make it non-dumpable, so that the agent's tools,
which share its uid, cannot open its /proc/PID/fd, environ or memory."""


@dataclass(frozen=True)
class SandboxSpec:
    run_id: str
    image: str
    workspace: Path
    workdir: str = "/workspace"
    readonly_paths: tuple[str, ...] = ()
    hidden_paths: tuple[str, ...] = ()
    """Patterns, read by `corral.paths` as in .gitignore."""
    required_paths: tuple[str, ...] = ()
    """Protected paths found in the run's base commit. Each is mounted like a match on disk, and one
    that is gone (deleted, or moved with its directory) fails the sandbox closed."""
    socket_dir: Path | None = None
    bridges: dict[int, str] = field(default_factory=dict)
    """127.0.0.1 port inside the container -> socket file name inside `socket_dir`."""
    cpus: float = 2.0
    memory: str = "4g"
    pids: int = 512
    env: dict[str, str] = field(default_factory=dict)
    purpose: str = "agent"
    readonly_files: dict[str, Path] = field(default_factory=dict)
    """Container path -> host file, bound read-only (the shell's managed settings and hook forwarder)."""
    runtime: str = "runc"
    """The Docker runtime name; under `GVISOR_RUNTIMES` the self-test also demands gVisor's kernel."""

    @property
    def gvisor(self) -> bool:
        return self.runtime in GVISOR_RUNTIMES

    @classmethod
    def from_config(
        cls,
        config: SandboxConfig,
        *,
        run_id: str,
        workspace: Path,
        purpose: str,
        protection: Protection,
        required_paths: tuple[str, ...] = (),
        socket_dir: Path | None = None,
        bridges: dict[int, str] | None = None,
        readonly_files: dict[str, Path] | None = None,
        image: str | None = None,
    ) -> SandboxSpec:
        """The project's `[sandbox]` section, for one container of run `run_id`.

        The paths come from `protection` (`Protection.from_config`), which adds corral's own control
        files to the section's read-only paths, and from the base commit (`required_paths`). `image`
        is what `Services.ensure_images` resolved: a `[sandbox.image]` recipe has no name of its own
        until it is built. The runtime is the section's unless `CORRAL_SANDBOX_RUNTIME` overrides
        it, so every container a run makes (agent, checks, shell, ...) runs under the same one.
        """
        chosen = image or config.image_name
        if chosen is None:
            raise ValueError("a [sandbox.image] recipe needs the built image's tag (image=)")
        return cls(
            run_id=run_id,
            image=chosen,
            workspace=workspace,
            workdir=config.workdir,
            readonly_paths=protection.readonly.patterns,
            hidden_paths=protection.hidden.patterns,
            required_paths=required_paths,
            socket_dir=socket_dir,
            bridges=dict(bridges or {}),
            cpus=config.cpus,
            memory=config.memory,
            pids=config.pids,
            purpose=purpose,
            runtime=docker_runtime(config.runtime),
            readonly_files=dict(readonly_files or {}),
        )


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: str
    """The tail of the combined output (the backend keeps a bounded amount)."""
    dropped_bytes: int = 0
    """How many bytes of output came before `output` and were not kept."""


@dataclass(frozen=True)
class SelfTestReport:
    interfaces: tuple[str, ...]
    host_probe: str
    passed: bool
    detail: str


class Sandbox(Protocol):
    @property
    def id(self) -> str: ...

    def exec(
        self, argv: list[str], *, env: dict[str, str] | None = None, timeout: float | None = None
    ) -> ExecResult:
        """Run argv inside the container as the agent user and return its combined output."""
        ...

    def exec_command(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        tty: bool = False,
        passthrough: Sequence[str] = (),
    ) -> list[str]:
        """The host argv (`docker exec -i ...`) that runs argv inside the container, stdio attached;
        with `tty`, on a pseudo-terminal (`-it`), for the interactive CLI. `passthrough` names
        variables docker takes from its own environment, so their values are in no argv."""
        ...

    def self_test(self, host_probe_port: int) -> SelfTestReport:
        """Prove the container has only loopback and cannot reach the host's 127.0.0.1:host_probe_port."""
        ...

    def stop(self, timeout: float = 2.0) -> None: ...

    def remove(self) -> None: ...


class SandboxBackend(Protocol):
    def create(self, spec: SandboxSpec) -> Sandbox:
        """Create and start the container; raise SandboxError naming what is missing."""
        ...

    def orphans(self, live_run_ids: set[str]) -> list[str]:
        """Ids of corral containers whose run is not in live_run_ids."""
        ...

    def run_containers(self) -> dict[str, str]:
        """Every corral container of this backend's owner: container id -> run id."""
        ...

    def remove_container(self, container_id: str) -> None: ...

    def reap_warm(self) -> list[str]:
        """Remove warm-pool containers whose creating process is gone; return their ids."""
        ...

    def sweep_masks(self, min_age_seconds: float = 60.0) -> list[Path]:
        """Remove host-side mask files whose container is gone; return what was removed."""
        ...
