"""The run lifecycle: a state machine over the components.

queued → preparing → running → checking → awaiting_approval, with failed (and its reason) reachable
from every state. Every step is recorded; the `finally` leaves the run in a recorded state and removes
its containers, sockets and worktree, whatever happened (an error, Ctrl-C, a wall-clock limit).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import secrets as pysecrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from corral.agent.policy import PathPolicy
from corral.audit import EventSink
from corral.config import Config, load_config
from corral.errors import CorralError, EgressError, RunError
from corral.events import (
    CheckResult,
    CommitMade,
    Event,
    PrefsInjected,
    RunCreated,
    RunFinished,
    RunPhase,
    SandboxCreated,
    SandboxRemoved,
    SandboxSelfTest,
)
from corral.model.playbook import Playbook
from corral.sandbox import AGENT_UID, Sandbox, SandboxBackend, SandboxSpec
from corral.sandbox.docker import start_host_probe
from corral.services import Services
from corral.state.machine import Phase
from corral.workspace import (
    Workspace,
    commit_changes,
    create_worktree,
    hand_over,
    inspect_repo,
    remove_worktree,
)

E = TypeVar("E", bound=Event)
Observer = Callable[[Event], None]

MODEL_PORT = 7301
GATEWAY_PORT = 7302


class ObservedSink:
    """An EventSink that also shows each event to observers (progress display, --json stream)."""

    def __init__(self, inner: EventSink, observers: list[Observer]) -> None:
        self._inner = inner
        self._observers = observers

    def emit(self, event: E, *, durable: bool = False) -> E:
        stored = self._inner.emit(event, durable=durable)
        for observer in self._observers:
            observer(stored)
        return stored

    def register_secret(self, name: str, value: str) -> None:
        self._inner.register_secret(name, value)


@dataclass(frozen=True)
class RunRequest:
    task: str
    repo: Path
    playbook: Path | None = None
    config_path: Path | None = None


@dataclass
class _Resources:
    """What a run holds and must give back, in reverse order, whatever happens."""

    containers: list[Sandbox] = field(default_factory=list)
    socket_dir: Path | None = None
    workspace: Workspace | None = None
    stoppers: list[Callable[[], None]] = field(default_factory=list)


def _import_agent_and_gateway() -> None:
    importlib.import_module("corral.agent.claude")
    importlib.import_module("corral.gateway.run")


def config_hash(config: Config) -> str:
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


class RunOrchestrator:
    def __init__(self, services: Services, observers: list[Observer] | None = None) -> None:
        self._services = services
        self._observers = observers or []

    # ---- validation before anything is created -------------------------------------------------

    def prepare_inputs(self, request: RunRequest) -> tuple[Config, Playbook | None]:
        info_repo = request.repo.expanduser().resolve()
        config = load_config(info_repo, request.config_path)
        playbook = Playbook.from_path(request.playbook) if request.playbook else None
        return config, playbook

    def run(self, request: RunRequest) -> str:
        """Run a task to awaiting_approval (or failed) and return the run id."""
        # The agent driver pulls in claude-agent-sdk and the MCP SDK (most of a second to import):
        # warm them in the background while the worktree, proxy and container are being set up.
        warm = threading.Thread(target=_import_agent_and_gateway, daemon=True)
        config, playbook = self.prepare_inputs(request)
        repo_info = inspect_repo(request.repo.resolve(), config.project.base_branch)
        backend = self._services.sandbox_backend()  # fails early when no Docker Engine runs
        state = self._services.state(config)
        project = state.ensure_project(
            name=config.project.name,
            repo=str(repo_info.root),
            team=config.project.team,
            image=config.sandbox.image,
            config_snapshot=config.model_dump(mode="json"),
        )
        record = state.create_run(
            project=project.name,
            task=request.task,
            repo=str(repo_info.root),
            base_commit=repo_info.base_commit,
            model=config.agent.model,
            small_model=config.agent.small_model,
        )
        run_id = record.run_id
        state.update_run(run_id, pid=os.getpid())
        audit = self._services.audit(config)
        if not audit.online:
            self._services.progress(
                f"warning: {audit.status().description}; events are kept in the local spool and shipped later"
            )
        recorder = audit.for_run(run_id)
        sink = ObservedSink(recorder, self._observers)
        started = time.monotonic()
        resources = _Resources()
        phase = Phase.QUEUED
        reason = ""

        def move(to: Phase, why: str = "") -> None:
            nonlocal phase
            state.transition(run_id, to, why)
            sink.emit(RunPhase(from_phase=phase.value, to_phase=to.value, reason=why))
            phase = to

        try:
            host_key = self._services.host_api_key()
            if host_key:
                sink.register_secret("ANTHROPIC_API_KEY", host_key)
            sink.emit(
                RunCreated(
                    task=request.task,
                    repo=str(repo_info.root),
                    base_commit=repo_info.base_commit,
                    branch=f"corral/{run_id}",
                    config_hash=config_hash(config),
                    model=config.agent.model,
                    small_model=config.agent.small_model,
                    dirty_paths=list(repo_info.dirty_paths),
                )
            )
            move(Phase.PREPARING)
            warm.start()  # from here the main thread mostly waits on git, Docker and the proxy
            self._services.ensure_images(config)
            resources.workspace = create_worktree(repo_info, run_id, self._services.settings.worktrees_dir)
            hand_over(resources.workspace, AGENT_UID)
            socket_dir = self._services.settings.run_socket_dir(run_id)
            socket_dir.mkdir(parents=True, exist_ok=True)
            socket_dir.chmod(0o755)
            resources.socket_dir = socket_dir
            model_token = "corral-run-" + pysecrets.token_urlsafe(24)
            proxy = self._services.start_model_proxy(
                config, playbook, sink, model_token, socket_dir / "model.sock", host_key
            )
            resources.stoppers.append(proxy.stop)
            prefs = self._services.preferences_for(config, request.task)
            if prefs.ids:
                sink.emit(PrefsInjected(preference_ids=list(prefs.ids)))
                state.update_run(run_id, preference_ids=[int(i) for i in prefs.ids])
            sandbox = self._create_sandbox(
                backend,
                config,
                run_id,
                resources,
                sink,
                socket_dir,
                {MODEL_PORT: "model.sock", GATEWAY_PORT: "gateway.sock"},
                "agent",
            )
            self._self_test(sandbox, sink)
            warm.join()
            gateway = self._services.start_gateway(
                config, repo_info.root, run_id, resources.workspace.branch, socket_dir / "gateway.sock", sink
            )
            resources.stoppers.append(gateway.stop)

            move(Phase.RUNNING)
            state.update_run(run_id, started_at=datetime.now(UTC), container_id=sandbox.id)
            from corral.agent.claude import AgentSettings, ClaudeDriver

            policy = PathPolicy(
                config.sandbox.workdir,
                tuple(config.sandbox.readonly_paths),
                tuple(config.sandbox.hidden_paths),
            )
            settings = AgentSettings(
                model=config.agent.model,
                small_model=config.agent.small_model,
                max_turns=config.agent.max_turns,
                timeout_seconds=config.agent.timeout_seconds,
                workdir=config.sandbox.workdir,
                model_url=f"http://127.0.0.1:{MODEL_PORT}",
                model_token=model_token,
                system_append=prefs.section,
                mcp_servers=gateway.mcp_config(f"http://127.0.0.1:{GATEWAY_PORT}/mcp")["mcpServers"],
                allowed_mcp_tools=tuple(gateway.allowed_tool_names()),
            )
            driver = ClaudeDriver(sandbox, sink, policy, settings, socket_dir.parent / f"{run_id}.wrapper")
            resources.stoppers.append(
                lambda: (socket_dir.parent / f"{run_id}.wrapper").unlink(missing_ok=True)
            )
            outcome = driver.run(request.task)
            state.update_run(
                run_id,
                cost_usd=outcome.cost_usd,
                input_tokens=outcome.input_tokens,
                output_tokens=outcome.output_tokens,
                result={
                    "turns": outcome.turns,
                    "stop_reason": outcome.stop_reason,
                    "text": outcome.result[:4000],
                },
            )
            self._remove_sandboxes(resources, sink)
            if outcome.is_error:
                raise RunError(f"the agent did not finish: {outcome.stop_reason}")

            protected = (*config.sandbox.readonly_paths, *config.sandbox.hidden_paths)
            commit = commit_changes(
                resources.workspace, f"corral: {request.task}\n\nRun: {run_id}", protected
            )
            if commit is not None:
                sink.emit(
                    CommitMade(
                        commit=commit.commit,
                        branch=resources.workspace.branch,
                        files=list(commit.files),
                        diff_stat=commit.diff_stat,
                    )
                )
                state.update_run(run_id, diffstat=commit.diff_stat, meta={"head_commit": commit.commit})

            move(Phase.CHECKING)
            check = self._run_checks(backend, config, run_id, resources, sink)
            state.update_run(
                run_id,
                checks_passed=check.passed,
                checks={
                    "command": check.command,
                    "exit_code": check.exit_code,
                    "duration_ms": check.duration_ms,
                },
            )
            move(Phase.AWAITING_APPROVAL, "checks passed" if check.passed else "checks failed")
        except KeyboardInterrupt:
            reason = "interrupted (Ctrl-C)"
            raise
        except CorralError as exc:
            reason = exc.message
        except Exception as exc:
            reason = f"internal error: {type(exc).__name__}: {exc}"
            raise
        finally:
            self._release(resources, sink)
            if phase not in (Phase.AWAITING_APPROVAL, Phase.FAILED):
                with contextlib.suppress(CorralError):
                    move(Phase.FAILED, reason or "run ended early")
            duration = int((time.monotonic() - started) * 1000)
            state.update_run(run_id, finished_at=datetime.now(UTC))
            sink.emit(RunFinished(phase=phase.value, reason=reason, duration_ms=duration))
            recorder.close()
        return run_id

    # ---- steps ---------------------------------------------------------------------------------

    def _create_sandbox(
        self,
        backend: SandboxBackend,
        config: Config,
        run_id: str,
        resources: _Resources,
        sink: EventSink,
        socket_dir: Path | None,
        bridges: dict[int, str],
        purpose: str,
    ) -> Sandbox:
        assert resources.workspace is not None
        spec = SandboxSpec(
            run_id=run_id,
            image=config.sandbox.image,
            workspace=resources.workspace.path,
            workdir=config.sandbox.workdir,
            readonly_paths=tuple(config.sandbox.readonly_paths),
            hidden_paths=tuple(config.sandbox.hidden_paths),
            socket_dir=socket_dir,
            bridges=bridges,
            cpus=config.sandbox.cpus,
            memory=config.sandbox.memory,
            pids=config.sandbox.pids,
            purpose=purpose,
        )
        sandbox = backend.create(spec)
        resources.containers.append(sandbox)
        sink.emit(
            SandboxCreated(
                container_id=sandbox.id,
                image=spec.image,
                purpose=purpose,
                readonly_paths=list(spec.readonly_paths),
                hidden_paths=list(spec.hidden_paths),
            )
        )
        return sandbox

    def _self_test(self, sandbox: Sandbox, sink: EventSink) -> None:
        probe = start_host_probe()
        try:
            report = sandbox.self_test(probe.port)
        finally:
            seen = probe.stop()
        passed = report.passed and seen == 0
        detail = report.detail if seen == 0 else f"the host probe saw {seen} connection(s); {report.detail}"
        sink.emit(
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

    def _run_checks(
        self, backend: SandboxBackend, config: Config, run_id: str, resources: _Resources, sink: EventSink
    ) -> CheckResult:
        assert resources.workspace is not None
        sandbox = self._create_sandbox(backend, config, run_id, resources, sink, None, {}, "checks")
        started = time.monotonic()
        result = sandbox.exec(["sh", "-c", config.checks.command], timeout=config.checks.timeout_seconds)
        check = sink.emit(
            CheckResult(
                command=config.checks.command,
                exit_code=result.exit_code,
                passed=result.exit_code == 0,
                output=result.output[-20000:],
                duration_ms=int((time.monotonic() - started) * 1000),
            )
        )
        self._remove_sandboxes(resources, sink)
        return check

    def _remove_sandboxes(self, resources: _Resources, sink: EventSink | None) -> None:
        while resources.containers:
            sandbox = resources.containers.pop()
            with contextlib.suppress(CorralError):
                sandbox.remove()
            if sink is not None:
                with contextlib.suppress(CorralError):
                    sink.emit(SandboxRemoved(container_id=sandbox.id))

    def _release(self, resources: _Resources, sink: EventSink) -> None:
        self._remove_sandboxes(resources, sink)
        for stop in reversed(resources.stoppers):
            with contextlib.suppress(Exception):
                stop()
        if resources.socket_dir is not None:
            shutil.rmtree(resources.socket_dir, ignore_errors=True)
        if resources.workspace is not None:
            remove_worktree(resources.workspace.repo, resources.workspace.path)
