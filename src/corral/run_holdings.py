"""What a run holds on its host, its sandboxes, sockets, worktree and servers, and how it gives them back.

The base of `corral.runs._Run`: the lifecycle there decides when; this decides how.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from corral.audit import EventSink
from corral.config import Config
from corral.errors import CorralError, EgressError, RunError
from corral.events import SandboxCreated, SandboxRemoved, SandboxSelfTest
from corral.paths import Protection
from corral.run_request import Resources
from corral.sandbox import Sandbox, SandboxBackend, SandboxSpec
from corral.sandbox.probe import start_host_probe
from corral.state.machine import Phase
from corral.workspace import delete_branch, remove_worktree


class RunHoldings:
    config: Config
    run_id: str
    backend: SandboxBackend
    sink: EventSink
    resources: Resources
    protection: Protection
    base_protected: tuple[str, ...]
    image: str | None
    phase: Phase

    # ---- sandboxes and resources ---------------------------------------------------------------

    def create_sandbox(
        self,
        purpose: str,
        socket_dir: Path | None,
        bridges: dict[int, str],
        files: dict[str, Path] | None = None,
    ) -> Sandbox:
        workspace = self.resources.workspace
        assert workspace is not None
        spec = SandboxSpec.from_config(
            self.config.sandbox,
            run_id=self.run_id,
            workspace=workspace.path,
            purpose=purpose,
            protection=self.protection,
            required_paths=self.base_protected,
            socket_dir=socket_dir,
            bridges=bridges,
            readonly_files=files,
            image=self.image,
        )
        sandbox = self.backend.create(spec)
        self.resources.containers.append(sandbox)
        self.sink.emit(
            SandboxCreated(
                container_id=sandbox.id,
                image=spec.image,
                purpose=purpose,
                readonly_paths=list(spec.readonly_paths),
                hidden_paths=list(spec.hidden_paths),
                warm=bool(getattr(sandbox, "warm", False)),
            )
        )
        return sandbox

    def self_test(self, sandbox: Sandbox) -> None:
        probe = start_host_probe()
        try:
            report = sandbox.self_test(probe.port)
        finally:
            seen = probe.stop()
        passed = report.passed and seen == 0
        detail = report.detail if seen == 0 else f"the host probe saw {seen} connection(s); {report.detail}"
        self.sink.emit(
            SandboxSelfTest(
                passed=passed, interfaces=list(report.interfaces), host_probe=report.host_probe, detail=detail
            )
        )
        if not passed:
            raise EgressError(
                f"egress self-test failed in container {sandbox.id[:12]}, "
                f"refusing to start the agent: {detail}",
                hint="the container must have only loopback and no route to the host; check the Docker setup",
            )

    def remove_sandboxes(self, *, strict: bool = True) -> None:
        """Remove the run's containers. With `strict`, one that cannot be removed fails the run: its
        processes may still be writing to the workspace, so nothing may be committed or checked."""
        failed: list[tuple[Sandbox, CorralError]] = []
        while self.resources.containers:
            sandbox = self.resources.containers.pop()
            try:
                sandbox.remove()
            except CorralError as exc:
                failed.append((sandbox, exc))
                continue
            with contextlib.suppress(CorralError):
                self.sink.emit(SandboxRemoved(container_id=sandbox.id))
        self.resources.containers.extend(sandbox for sandbox, _ in failed)  # release() tries again
        if failed and strict:
            stuck, error = failed[0]
            raise RunError(
                f"could not remove sandbox {stuck.id[:12]}, so the run stops before anything else "
                f"touches its workspace: {error.message}",
                hint="check `docker ps -a` and the Docker Engine's log; `corral gc` removes what is left",
            )

    def release(self) -> None:
        """Give back everything the run holds, in reverse order, whatever happened."""
        self.remove_sandboxes(strict=False)
        for stop in reversed(self.resources.stoppers):
            with contextlib.suppress(Exception):
                stop()
        if self.resources.socket_dir is not None:
            shutil.rmtree(self.resources.socket_dir, ignore_errors=True)
        if self.resources.workspace is not None:
            remove_worktree(self.resources.workspace.repo, self.resources.workspace.path)
            if self.phase is Phase.NO_CHANGES:  # nothing to review: no branch is left behind
                delete_branch(self.resources.workspace.repo, self.resources.workspace.branch)
