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
from typing import TYPE_CHECKING

from corral.agent.policy import PathPolicy
from corral.audit import EventSink
from corral.audit.observed import ObservedSink, Observer
from corral.config import Config, load_config
from corral.errors import CorralError, EgressError, RunError
from corral.events import (
    CheckResult,
    CommitMade,
    DeployStaged,
    PrefsInjected,
    RunCreated,
    RunFinished,
    RunPhase,
    SandboxCreated,
    SandboxRemoved,
    SandboxSelfTest,
)
from corral.model.budget import Budget
from corral.model.playbook import Playbook
from corral.paths import Protection
from corral.sandbox import AGENT_UID, Sandbox, SandboxBackend, SandboxSpec
from corral.sandbox.nodump import check_nodump
from corral.sandbox.probe import start_host_probe
from corral.secrets import sandbox_env
from corral.services import PreferenceSelection, Services
from corral.state.machine import Phase
from corral.workspace import (
    RepoInfo,
    Workspace,
    commit_changes,
    create_worktree,
    hand_over,
    inspect_repo,
    protected_in_commit,
    remove_worktree,
)

if TYPE_CHECKING:
    from corral.audit.recorder import RunRecorder
    from corral.gateway.run import RunGatewayHandle
    from corral.state.models import RunRecord

MODEL_PORT = 7301
GATEWAY_PORT = 7302


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


@dataclass(frozen=True)
class _Prepared:
    """What preparing hands to the agent phase."""

    sandbox: Sandbox
    model_token: str
    gateway: RunGatewayHandle
    prefs: PreferenceSelection
    budget: Budget


class RunOrchestrator:
    def __init__(self, services: Services, observers: list[Observer] | None = None) -> None:
        self._services = services
        self._observers = observers or []
        self._config: Config | None = None

    def prepare_inputs(self, request: RunRequest) -> tuple[Config, Playbook | None]:
        """Validate everything the user gave before anything is created."""
        config = load_config(request.repo.expanduser().resolve(), request.config_path)
        playbook = Playbook.from_path(request.playbook) if request.playbook else None
        return config, playbook

    def run(self, request: RunRequest) -> str:
        """Run a task to awaiting_approval (or failed) and return the run id."""
        config, playbook = self.prepare_inputs(request)
        self._config = config
        repo_info = inspect_repo(request.repo.resolve(), config.project.base_branch)
        backend = self._services.sandbox_backend()  # fails early when no Docker Engine runs
        return _Run.start(
            self._services, self._observers, request, config, playbook, repo_info, backend
        ).execute()

    def record(self, run_id: str) -> RunRecord:
        """The run's record, from the store of the project it ran in (its team, its stores)."""
        return self._services.state(self._config).get_run(run_id)


class _Run:
    """One run, from its recorded creation to its recorded end. Each phase is one method."""

    def __init__(
        self,
        services: Services,
        request: RunRequest,
        config: Config,
        playbook: Playbook | None,
        repo_info: RepoInfo,
        backend: SandboxBackend,
        run_id: str,
        recorder: RunRecorder,
        sink: EventSink,
    ) -> None:
        self.services = services
        self.request = request
        self.config = config
        self.playbook = playbook
        self.repo_info = repo_info
        self.backend = backend
        self.run_id = run_id
        self.state = services.state(config)
        self.recorder = recorder
        self.sink = sink
        self.resources = _Resources()
        self.phase = Phase.QUEUED
        self.protection = Protection.from_config(config)
        self.base_protected: tuple[str, ...] = ()
        """The protected paths of the base commit: every sandbox of the run masks exactly these."""
        self.head_commit = ""
        self.host_key = services.host_api_key()
        """Read once: registered for redaction, then handed to the model proxy and nowhere else."""
        # The agent driver pulls in claude-agent-sdk and the MCP SDK (most of a second to import):
        # warm them in the background while the worktree, proxy and container are being set up.
        self.warm = threading.Thread(target=_import_agent_and_gateway, daemon=True)

    @classmethod
    def start(
        cls,
        services: Services,
        observers: list[Observer],
        request: RunRequest,
        config: Config,
        playbook: Playbook | None,
        repo_info: RepoInfo,
        backend: SandboxBackend,
    ) -> _Run:
        """Record the run (queued) and open its audit chain."""
        state = services.state(config)
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
        state.update_run(record.run_id, pid=os.getpid())
        audit = services.audit(config)
        if not audit.online:
            services.progress(
                f"warning: {audit.status().description}; events are kept in the local spool and shipped later"
            )
        recorder = audit.for_run(record.run_id)
        sink = ObservedSink(recorder, observers)
        return cls(services, request, config, playbook, repo_info, backend, record.run_id, recorder, sink)

    def move(self, to: Phase, why: str = "") -> None:
        self.state.transition(self.run_id, to, why)
        self.sink.emit(RunPhase(from_phase=self.phase.value, to_phase=to.value, reason=why))
        self.phase = to

    def execute(self) -> str:
        started = time.monotonic()
        reason = ""
        try:
            self.record_creation()
            self.move(Phase.PREPARING)
            prepared = self.prepare()
            self.move(Phase.RUNNING)
            self.drive_agent(prepared)
            self.commit()
            self.move(Phase.CHECKING)
            check = self.run_checks()
            self.stage_requested(tuple(prepared.gateway.binding.stage_requests), check)
            self.move(Phase.AWAITING_APPROVAL, "checks passed" if check.passed else "checks failed")
        except KeyboardInterrupt:
            reason = "interrupted (Ctrl-C)"
            raise
        except CorralError as exc:
            reason = exc.message
        except Exception as exc:
            reason = f"internal error: {type(exc).__name__}: {exc}"
            raise
        finally:
            self.release()
            if self.phase not in (Phase.AWAITING_APPROVAL, Phase.FAILED):
                with contextlib.suppress(CorralError):
                    self.move(Phase.FAILED, reason or "run ended early")
            duration = int((time.monotonic() - started) * 1000)
            self.state.update_run(self.run_id, finished_at=datetime.now(UTC))
            self.sink.emit(RunFinished(phase=self.phase.value, reason=reason, duration_ms=duration))
            self.recorder.close()
        return self.run_id

    # ---- phases --------------------------------------------------------------------------------

    def record_creation(self) -> None:
        if self.host_key:
            self.sink.register_secret("ANTHROPIC_API_KEY", self.host_key)
        exposed = sorted(self.config.agent_secrets())
        if exposed:
            # The agent may print, commit or send such a value anywhere its tools reach: say so.
            self.services.progress(
                f'WARNING: secrets exposed to the agent\'s sandbox (expose = "agent"): {", ".join(exposed)}'
            )
        self.sink.emit(
            RunCreated(
                task=self.request.task,
                repo=str(self.repo_info.root),
                base_commit=self.repo_info.base_commit,
                branch=f"corral/{self.run_id}",
                config_hash=config_hash(self.config),
                model=self.config.agent.model,
                small_model=self.config.agent.small_model,
                dirty_paths=list(self.repo_info.dirty_paths),
            )
        )

    def prepare(self) -> _Prepared:
        """Worktree, sockets, model proxy, sandbox with its self-test, gateway: all a run needs."""
        self.warm.start()  # from here the main thread mostly waits on git, Docker and the proxy
        config, resources = self.config, self.resources
        self.services.ensure_images(config)
        workspace = resources.workspace = create_worktree(
            self.repo_info, self.run_id, self.services.settings.worktrees_dir
        )
        hand_over(workspace, AGENT_UID)
        self.base_protected = protected_in_commit(workspace, self.protection)
        socket_dir = resources.socket_dir = self.services.settings.run_socket_dir(self.run_id)
        socket_dir.mkdir(parents=True, exist_ok=True)
        socket_dir.chmod(0o755)  # the sandbox's uid must reach the sockets inside
        model_token = "corral-run-" + pysecrets.token_urlsafe(24)
        proxy = self.services.start_model_proxy(
            config,
            self.playbook,
            self.sink,
            model_token,
            socket_dir / "model.sock",
            self.host_key,
        )
        resources.stoppers.append(proxy.stop)
        prefs = self.services.preferences_for(config, self.request.task)
        if prefs.ids:
            self.sink.emit(PrefsInjected(preference_ids=list(prefs.ids)))
            self.state.update_run(self.run_id, preference_ids=[int(i) for i in prefs.ids])
        sandbox = self.create_sandbox(
            "agent", socket_dir, {MODEL_PORT: "model.sock", GATEWAY_PORT: "gateway.sock"}
        )
        self.self_test(sandbox)
        check_nodump(sandbox)
        self.warm.join()
        gateway = self.services.start_gateway(
            config, self.repo_info.root, self.run_id, workspace.branch, socket_dir / "gateway.sock", self.sink
        )
        resources.stoppers.append(gateway.stop)
        return _Prepared(sandbox, model_token, gateway, prefs, proxy.budget)

    def drive_agent(self, prepared: _Prepared) -> None:
        from corral.agent.claude import AgentSettings, ClaudeDriver

        config = self.config
        self.state.update_run(self.run_id, started_at=datetime.now(UTC), container_id=prepared.sandbox.id)
        policy = PathPolicy(
            config.sandbox.workdir, self.protection.readonly.patterns, self.protection.hidden.patterns
        )
        settings = AgentSettings.from_config(
            config,
            model_url=f"http://127.0.0.1:{MODEL_PORT}",
            model_token=prepared.model_token,
            system_append=prepared.prefs.section,
            mcp_servers=prepared.gateway.mcp_config(f"http://127.0.0.1:{GATEWAY_PORT}/mcp")["mcpServers"],
            allowed_mcp_tools=tuple(prepared.gateway.allowed_tool_names()),
            exposed_secrets=sandbox_env(config, "agent", self.sink),
        )
        wrapper = self.services.settings.sockets_dir / f"{self.run_id}.wrapper"
        self.resources.stoppers.append(lambda: wrapper.unlink(missing_ok=True))
        outcome = ClaudeDriver(prepared.sandbox, self.sink, policy, settings, wrapper).run(self.request.task)
        self.state.update_run(
            self.run_id,
            cost_usd=outcome.cost_usd,
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            result={
                "turns": outcome.turns,
                "stop_reason": outcome.stop_reason,
                "text": outcome.result[:4000],
            },
        )
        self.remove_sandboxes()
        if prepared.budget.exhausted:
            raise RunError(
                f"budget exhausted: {prepared.budget.exhausted}",
                hint="raise the limit under [agent] in corral.toml, or give the agent a smaller task",
            )
        if outcome.is_error:
            raise RunError(f"the agent did not finish: {outcome.stop_reason}")

    def commit(self) -> None:
        """Commit the agent's change on the run branch; a change to a protected path fails the run."""
        workspace = self.resources.workspace
        assert workspace is not None
        message = f"corral: {self.request.task}\n\nRun: {self.run_id}"
        commit = commit_changes(workspace, message, self.protection, self.config.limits)
        if commit is None:
            return
        self.sink.emit(
            CommitMade(
                commit=commit.commit,
                branch=workspace.branch,
                files=list(commit.files),
                diff_stat=commit.diff_stat,
            )
        )
        self.state.update_run(self.run_id, diffstat=commit.diff_stat, meta={"head_commit": commit.commit})
        self.head_commit = commit.commit

    def run_checks(self) -> CheckResult:
        """`[checks].command` in a fresh sandbox (the agent never touched it) on the committed result."""
        command = self.config.checks.command
        env = sandbox_env(self.config, "checks", self.sink)
        sandbox = self.create_sandbox("checks", None, {})
        started = time.monotonic()
        result = sandbox.exec(["sh", "-c", command], env=env, timeout=self.config.checks.timeout_seconds)
        check = self.sink.emit(
            CheckResult(
                command=command,
                exit_code=result.exit_code,
                passed=result.exit_code == 0,
                output=result.output[-20000:],
                duration_ms=int((time.monotonic() - started) * 1000),
            )
        )
        self.remove_sandboxes()
        self.state.update_run(
            self.run_id,
            checks_passed=check.passed,
            checks={"command": command, "exit_code": check.exit_code, "duration_ms": check.duration_ms},
        )
        return check

    def stage_requested(self, targets: tuple[str, ...], check: CheckResult) -> None:
        """Carry out the agent's `deploy.stage` requests, only after passing checks and only at the
        committed SHA: while the agent ran, nothing was committed and its branch could still move."""
        if not targets:
            return
        if not check.passed or not self.head_commit:
            why = "the checks failed" if not check.passed else "the run committed nothing"
            self.services.progress(f"not staging on {', '.join(targets)}: {why}")
            return
        deploy = self.services.deploy_target()
        for target in targets:
            dep = deploy.stage(run_id=self.run_id, ref=self.head_commit, target=target)
            self.sink.emit(DeployStaged(deployment_id=dep.id, url=dep.url, ref=dep.ref))

    # ---- sandboxes and resources ---------------------------------------------------------------

    def create_sandbox(self, purpose: str, socket_dir: Path | None, bridges: dict[int, str]) -> Sandbox:
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
