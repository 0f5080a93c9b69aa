"""Warm sandboxes: a small pool of pre-created, self-tested containers per image that runs claim.

A long-lived process (`corral server --warm N`, later `corral worker --warm N`) keeps N hardened
containers ready per pool key (image id, runtime, limits, bridges). Nothing about isolation changes:

- **One run per container.** A claimed container leaves the pool for good and is destroyed with its
  run; nothing is ever handed back, so nothing a previous repository's agent wrote can be met again.
- **Same hardening.** A warm container is created by `DockerBackend.start_container` with exactly the
  cold options (no network, no capabilities, read-only root, limits, uid split, bridges).
- **Mounts arrive at claim time.** Docker cannot add a mount to a container, so a warm container is
  created with its workspace and socket directory bound from empty per-slot host directories with
  slave propagation. At claim the host mounts the run's worktree on the slot, then every mount of
  the run's `plan_mounts` plan (read-only paths, anchors, masks, sockets) under it. The plan is the
  cold one, checks and all; a read-only mount is made read-only before it becomes visible
  (corral.sandbox.hostmount). Slave propagation is one-way: nothing the container mounts (it cannot,
  without capabilities) reaches the host.
- **Checks are repeated on the claimed container.** At claim the container must still be running the
  same process since its fill (same start time, no restart), from the same image id as the run's
  verified image, with network mode none and no network attached, and with the hardening it was
  created with. The run then runs the egress self-test and the non-dumpable check on it as on a cold
  one (runs.py), after its mounts are attached.

gVisor's gofer does not see host mounts made after the sandbox started, so under a gVisor runtime
the pool is never used and runs start cold. A claim that finds no ready container starts cold too
and asks the pool to fill that key.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import Mount

from corral.errors import CorralError, SandboxError
from corral.sandbox import (
    OWNER_LABEL,
    POOL_LABEL,
    SOCKETS_IN_CONTAINER,
    SandboxSpec,
    hostmount,
)
from corral.sandbox.docker import (
    HOST_PID_LABEL,
    DockerBackend,
    DockerSandbox,
    remove_container,
    run_self_test,
)
from corral.sandbox.mounts import TMPFS, MountPlan, plan_mounts
from corral.sandbox.nodump import check_nodump

SLOT_LABEL = "io.corral.slot"
_RETRY_SECONDS = 5.0
Progress = Callable[[str], None]


@dataclass(frozen=True)
class PoolKey:
    """What a container is created with that a run cannot change afterwards."""

    image_id: str
    purpose: str
    workdir: str
    sockets: bool
    bridges: tuple[tuple[int, str], ...]
    cpus: float
    memory: str
    pids: int
    runtime: str
    env: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, spec: SandboxSpec, image_id: str) -> PoolKey:
        return cls(
            image_id=image_id,
            purpose=spec.purpose,
            workdir=spec.workdir.rstrip("/"),
            sockets=spec.socket_dir is not None,
            bridges=tuple(sorted(spec.bridges.items())),
            cpus=spec.cpus,
            memory=spec.memory,
            pids=spec.pids,
            runtime=spec.runtime,
            env=tuple(sorted(spec.env.items())),
        )

    @property
    def digest(self) -> str:
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]


@dataclass
class Slot:
    """One pooled container and its host directories: `<pool root>/<name>/{workspace,sockets}`."""

    name: str
    directory: Path
    container: Any
    started_at: str
    mask_dir: Path

    @property
    def workspace(self) -> Path:
        return self.directory / "workspace"

    @property
    def sockets(self) -> Path:
        return self.directory / "sockets"


class WarmSandbox(DockerSandbox):
    """A claimed container: removing it also detaches and deletes its slot (never returned to a pool)."""

    def __init__(self, client: docker.DockerClient, slot: Slot, spec: SandboxSpec) -> None:
        super().__init__(client, slot.container, spec, slot.mask_dir)
        self.slot = slot
        self.warm = True

    def remove(self) -> None:
        super().remove()
        release_slot(self.slot.directory)


def release_slot(directory: Path) -> None:
    """Detach a slot's mounts and delete its (then empty) directories; never a recursive delete,
    which would walk into a worktree still mounted there."""
    for sub in ("workspace", "sockets"):
        path = directory / sub
        hostmount.detach(path)
        with contextlib.suppress(FileNotFoundError):
            path.rmdir()
    with contextlib.suppress(FileNotFoundError):
        directory.rmdir()


class WarmPool:
    """`size` ready containers per key, refilled in the background. `close()` removes them all."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        size: int,
        home: Path,
        owner: str,
        mask_root: Path | None = None,
        progress: Progress | None = None,
    ) -> None:
        if size < 1:
            raise SandboxError(f"--warm {size}: a warm pool holds at least one container")
        self.size = size
        self.root = (home / "warm").resolve()
        self.stage = (home / "warm-stage").resolve()
        self._client = client
        self._backend = DockerBackend(client, mask_root=mask_root, owner=owner)
        self._mask_root = self._backend._mask_root
        self._progress: Progress = progress or (lambda _msg: None)
        self._ready: dict[PoolKey, list[Slot]] = {}
        self._filling: dict[PoolKey, int] = {}
        # Containers started and still being self-tested: close() removes them, which ends the test's
        # exec at once, so a stop never waits out a self-test on a loaded host.
        self._testing: set[str] = set()
        self._cond = threading.Condition()
        self._closed = False
        self.errors: list[str] = []
        self.claimed = 0
        self.created = 0
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        hostmount.ensure_self_mount(self.root, hostmount.MS_SHARED)
        hostmount.ensure_self_mount(self.stage, hostmount.MS_PRIVATE)
        self._thread = threading.Thread(target=self._fill_loop, name="corral-warm-pool", daemon=True)
        self._thread.start()

    def want(self, spec: SandboxSpec) -> PoolKey | None:
        """Keep containers ready for sandboxes like `spec` (None: this spec is never served warm)."""
        key = self._key(spec)
        if key is not None:
            with self._cond:
                self._ready.setdefault(key, [])
                self._cond.notify_all()
        return key

    def ready(self) -> dict[PoolKey, int]:
        with self._cond:
            return {key: len(slots) for key, slots in self._ready.items()}

    def wait_ready(self, key: PoolKey, count: int, timeout: float) -> bool:
        """Block until `count` containers of `key` are ready (for startup and tests)."""
        with self._cond:
            return (
                self._cond.wait_for(lambda: len(self._ready.get(key, [])) >= count or self._closed, timeout)
                and not self._closed
            )

    def wait_full(self, timeout: float) -> bool:
        """Block until every key wanted so far has `size` containers ready (a worker's startup)."""
        with self._cond:
            return (
                self._cond.wait_for(
                    lambda: self._closed or all(len(s) >= self.size for s in self._ready.values()), timeout
                )
                and not self._closed
            )

    def close(self) -> None:
        """Stop filling and remove every container still in the pool (claimed ones go with their run)."""
        with self._cond:
            self._closed = True
            slots = [slot for slots in self._ready.values() for slot in slots]
            self._ready.clear()
            testing = list(self._testing)
            self._cond.notify_all()
        for container_id in testing:
            with contextlib.suppress(CorralError):
                remove_container(self._client, container_id, self._mask_root)
        if self._thread is not None:
            self._thread.join(timeout=60)
        for slot in slots:
            self._discard(slot)
        # The pool's own mount points go once no claimed slot (a run still going) sits under them.
        with contextlib.suppress(OSError, CorralError):
            if not any(self.root.iterdir()):
                hostmount.detach(self.root)
                hostmount.detach(self.stage)

    # ---- claim ---------------------------------------------------------------------------------

    def claim(self, spec: SandboxSpec, client: docker.DockerClient | None = None) -> WarmSandbox | None:
        """A ready container with `spec`'s mounts attached, or None (the caller then starts cold).

        The mount plan is made first, exactly as a cold create makes it, so a protected path that is
        gone or a link fails the run the same way. The sandbox talks to Docker through `client` (the
        run's own), never through the pool's, which the filling thread is using at the same time.
        """
        key = self.want(spec)
        if key is None:
            return None
        with self._cond:
            slots = self._ready.get(key, [])
            slot = slots.pop(0) if slots else None
            self._cond.notify_all()
        if slot is None:
            return None
        try:
            plan = plan_mounts(spec, slot.mask_dir)
            problem = self._changed(slot, key)
            if problem:
                self.errors.append(f"{slot.name}: {problem}")
                self._discard(slot)
                return None
            self._attach(slot, spec, plan)
            if client is not None:
                slot.container = client.containers.get(str(slot.container.id))
        except docker.errors.DockerException as exc:
            self._discard(slot)
            raise SandboxError(
                f"claim the warm container {slot.name}: {exc}", hint="check `docker info`"
            ) from exc
        except BaseException:
            self._discard(slot)
            raise
        self.claimed += 1
        return WarmSandbox(client or self._client, slot, spec)

    def _key(self, spec: SandboxSpec) -> PoolKey | None:
        if spec.gvisor or spec.readonly_files:
            return None  # gVisor sees no late mount; extra files would need mounts outside the slot
        try:
            image_id = str(self._client.images.get(spec.image).id)
        except docker.errors.DockerException:
            return None  # the cold create names what is missing
        return PoolKey.of(spec, image_id)

    def _changed(self, slot: Slot, key: PoolKey) -> str:
        """What makes a pooled container unfit now; empty when it is exactly as it was filled."""
        try:
            slot.container.reload()
        except docker.errors.DockerException as exc:
            return f"cannot inspect: {exc}"
        attrs = slot.container.attrs
        state, host = attrs.get("State", {}), attrs.get("HostConfig", {})
        networks = set((attrs.get("NetworkSettings", {}).get("Networks") or {}).keys())
        checks = {
            "not running": state.get("Running") is True and not state.get("Paused"),
            "restarted since it was filled": attrs.get("RestartCount", 0) == 0
            and state.get("StartedAt") == slot.started_at,
            "not from the run's verified image": attrs.get("Image") == key.image_id,
            "network mode is not none": host.get("NetworkMode") == "none" and networks <= {"none"},
            "hardening changed": host.get("CapDrop") == ["ALL"]
            and host.get("ReadonlyRootfs") is True
            and "no-new-privileges" in (host.get("SecurityOpt") or [])
            and not host.get("Privileged"),
        }
        return ", ".join(why for why, ok in checks.items() if not ok)

    def _attach(self, slot: Slot, spec: SandboxSpec, plan: MountPlan) -> None:
        """Every mount of the run's plan, under the slot's directories, parents before children."""
        workdir = spec.workdir.rstrip("/")
        items: list[tuple[str, Callable[[Path, Path], None]]] = []
        for m in plan.mounts:
            target, source, read_only = str(m["Target"]), Path(m["Source"]), bool(m["ReadOnly"])

            def bind(host: Path, stage: Path, source: Path = source, read_only: bool = read_only) -> None:
                hostmount.attach_bind(source, host, read_only=read_only, stage=stage)

            items.append((target, bind))
        for target, options in plan.tmpfs.items():
            if TMPFS.get(target) == options:
                continue  # /tmp and HOME: the container has them already

            def tmpfs(host: Path, stage: Path, options: str = options) -> None:
                hostmount.attach_tmpfs(host, options, stage=stage)

            items.append((target, tmpfs))
        items.sort(key=lambda item: item[0].count("/"))
        for index, (target, make) in enumerate(items):
            make(self._host_path(slot, workdir, target), self.stage / f"{slot.name}-{index}")

    @staticmethod
    def _host_path(slot: Slot, workdir: str, target: str) -> Path:
        if target == SOCKETS_IN_CONTAINER:
            return slot.sockets
        if target == workdir:
            return slot.workspace
        if target.startswith(workdir + "/"):
            return slot.workspace / target[len(workdir) + 1 :]
        raise SandboxError(f"a warm sandbox cannot mount {target} (outside {workdir} and the sockets)")

    # ---- filling -------------------------------------------------------------------------------

    def _fill_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._next_key() is not None)
                if self._closed:
                    return
                key = self._next_key()
                assert key is not None
                self._filling[key] = self._filling.get(key, 0) + 1
            try:
                slot = self._fill(key)
            except Exception as exc:  # the pool keeps trying; runs meanwhile start cold
                slot = None
                if self._closed:  # close() removed the container under its self-test: not a failure
                    return
                message = exc.message if isinstance(exc, CorralError) else f"{type(exc).__name__}: {exc}"
                self.errors.append(message)
                self._progress(f"warm pool: {message}")
            finally:
                with self._cond:
                    self._filling[key] -= 1
            if slot is None:
                with self._cond:  # a failed fill waits before it tries again, or until close
                    self._cond.wait_for(lambda: self._closed, _RETRY_SECONDS)
                continue
            with self._cond:
                keep = not self._closed
                if keep:
                    self._ready[key].append(slot)
                    self._cond.notify_all()
            if not keep:  # closed while this one was being made: it never joins the pool
                self._discard(slot)
                return

    def _next_key(self) -> PoolKey | None:
        for key, slots in self._ready.items():
            if len(slots) + self._filling.get(key, 0) < self.size:
                return key
        return None

    def _fill(self, key: PoolKey) -> Slot:
        """Create one container for `key`, run the egress self-test and the non-dumpable check on it."""
        name = f"corral-warm-{key.purpose}-{secrets.token_hex(4)}"
        directory = self.root / name
        slot_spec = SandboxSpec(
            run_id="warm",
            image=key.image_id,
            workspace=directory / "workspace",
            workdir=key.workdir,
            socket_dir=directory / "sockets" if key.sockets else None,
            bridges=dict(key.bridges),
            cpus=key.cpus,
            memory=key.memory,
            pids=key.pids,
            env=dict(key.env),
            purpose=key.purpose,
            runtime=key.runtime,
        )
        for sub in ("workspace", "sockets"):
            (directory / sub).mkdir(parents=True, mode=0o755)
        plan = MountPlan()
        plan.mounts.append(Mount(key.workdir, str(slot_spec.workspace), type="bind", propagation="rslave"))
        if key.sockets:
            plan.mounts.append(
                Mount(
                    SOCKETS_IN_CONTAINER,
                    str(directory / "sockets"),
                    type="bind",
                    read_only=True,
                    propagation="rslave",
                )
            )
        labels = {POOL_LABEL: key.digest, SLOT_LABEL: str(directory)}
        mask_dir = self._mask_root / name
        try:
            sandbox = self._backend.start_container(slot_spec, name, mask_dir, plan, labels)
        except BaseException:
            release_slot(directory)
            raise
        slot = Slot(name, directory, sandbox._container, "", mask_dir)
        with self._cond:
            self._testing.add(sandbox.id)
        try:
            run_self_test(sandbox)
            check_nodump(sandbox)
            sandbox._container.reload()
            slot.started_at = str(sandbox._container.attrs["State"]["StartedAt"])
        except BaseException:
            self._discard(slot)
            raise
        finally:
            with self._cond:
                self._testing.discard(sandbox.id)
        self.created += 1
        return slot

    def _discard(self, slot: Slot) -> None:
        with contextlib.suppress(CorralError):
            remove_container(self._client, str(slot.container.id), self._mask_root)
            release_slot(slot.directory)


class WarmBackend(DockerBackend):
    """A DockerBackend whose `create` claims a warm container when one fits, and creates cold otherwise."""

    def __init__(self, pool: WarmPool, client: docker.DockerClient, *, owner: str) -> None:
        super().__init__(client, owner=owner)
        self.pool = pool

    def create(self, spec: SandboxSpec) -> DockerSandbox:
        claimed = self.pool.claim(spec, self._client)
        return claimed if claimed is not None else super().create(spec)


def reap_pools(
    client: docker.DockerClient, owner: str, home: Path, alive: Callable[[int], bool]
) -> list[str]:
    """Remove the warm containers (pooled or claimed) of this home whose creating process is gone, and
    their slots. A live process's pool is its own to remove."""
    root = (home / "warm").resolve()
    try:
        containers = client.containers.list(
            all=True, filters={"label": [POOL_LABEL, f"{OWNER_LABEL}={owner}"]}
        )
    except docker.errors.DockerException as exc:
        raise SandboxError(f"list warm containers failed: {exc}", hint="check `docker info`") from exc
    removed = []
    for container in containers:
        labels = container.labels or {}
        pid = labels.get(HOST_PID_LABEL, "")
        if pid.isdigit() and alive(int(pid)):
            continue
        remove_container(client, str(container.id))
        slot = Path(labels.get(SLOT_LABEL, ""))
        if slot.parent == root:  # the label is only trusted to name a slot under this home's pool
            release_slot(slot)
        removed.append(str(container.id))
    if len(removed) == len(containers):  # no live pool is left in this home: its mount points go too
        with contextlib.suppress(OSError, CorralError):
            if root.is_dir() and not any(root.iterdir()):
                hostmount.detach(root)
                hostmount.detach((home / "warm-stage").resolve())
    return removed


@dataclass
class PoolStatus:
    size: int
    ready: dict[str, int] = field(default_factory=dict)
    created: int = 0
    claimed: int = 0
    errors: list[str] = field(default_factory=list)


def status(pool: WarmPool) -> PoolStatus:
    """For `corral workers` and the server's log: what is ready per image, and what went wrong."""
    ready = {f"{key.purpose}@{key.image_id[7:19]}": n for key, n in pool.ready().items()}
    return PoolStatus(pool.size, ready, pool.created, pool.claimed, list(pool.errors[-5:]))
