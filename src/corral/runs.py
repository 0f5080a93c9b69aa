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
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from corral.agent.policy import PathPolicy
from corral.audit import EventSink
from corral.audit.observed import ObservedSink, Observer
from corral.audit.redact import process_redactor
from corral.config import Config, load_config
from corral.diskspace import check_disk, low_space, with_disk
from corral.errors import CorralError, EgressError, ModelError, RunError, WorkspaceError
from corral.events import (
    AgentInit,
    CheckResult,
    CommitMade,
    DeployStaged,
    PrefsInjected,
    PrOpened,
    RunCreated,
    RunFinished,
    RunPhase,
    SandboxCreated,
    SandboxRemoved,
    SandboxSelfTest,
)
from corral.identity import current_user
from corral.incident.evidence import EvidenceCollector
from corral.incident.source import IncidentSource, incident_grants
from corral.model.budget import Budget
from corral.model.cassette import Cassette, is_cassette_file
from corral.model.playbook import Playbook
from corral.model.upstream_failures import UpstreamFailures
from corral.paths import Protection
from corral.sandbox import AGENT_UID, Sandbox, SandboxBackend, SandboxSpec
from corral.sandbox.nodump import check_nodump
from corral.sandbox.probe import start_host_probe
from corral.secrets import sandbox_env
from corral.services import PreferenceSelection, Services
from corral.state.machine import AT_REST, TERMINAL, Phase
from corral.workspace import (
    CommitInfo,
    RepoInfo,
    Workspace,
    commit_changes,
    commit_exists,
    create_worktree,
    delete_branch,
    hand_over,
    inspect_repo,
    protected_in_commit,
    remove_worktree,
)

if TYPE_CHECKING:
    from corral.agent.claude import AgentSettings
    from corral.audit.log import AuditLog
    from corral.audit.recorder import RunRecorder
    from corral.gateway.run import RunGatewayHandle
    from corral.state.models import RunRecord

MODEL_PORT = 7301
GATEWAY_PORT = 7302


RunMode = Literal["run", "regress", "replay"]
Script = Playbook | Cassette


@dataclass(frozen=True)
class RunRequest:
    """`mode` "regress" re-runs a recorded task with `model` (a candidate); "replay" re-drives one
    from its cassette. Both start from `base_commit`, end at `evaluated` after the checks, and are
    never offered for approval; regression runs also lose every forge and deploy write grant."""

    task: str
    repo: Path
    playbook: Path | None = None
    """A playbook (YAML) or a cassette (JSON) for the scripted model to play."""
    config_path: Path | None = None
    requester: str | None = None
    """Who asked (a `corral server` user); None: the person at this keyboard (`corral.identity`)."""
    mode: RunMode = "run"
    model: str | None = None
    base_commit: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    cassette: Cassette | None = None
    preference_ids: tuple[int, ...] | None = None
    """Inject exactly these preferences (a replay: what the recording was told) instead of retrieving."""

    incident: IncidentSource | None = None
    """An incident run: the source's read class is granted, and glob grants reaching its writes dropped."""


def _evaluation_grants(grants: list[str]) -> list[str]:
    """What a regression run may call: no forge or deploy tool that acts (reads stay)."""
    kept = []
    for grant in grants:
        tool = grant.split("(", 1)[0]
        acts = tool.startswith(("forge.", "deploy.")) and not tool.endswith((":read", "list_checks"))
        if not acts:
            kept.append(grant)
    return kept


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
    failures: UpstreamFailures


class RunOrchestrator:
    def __init__(self, services: Services, observers: list[Observer] | None = None) -> None:
        self._services = services
        self._observers = observers or []
        self._config: Config | None = None

    def prepare_inputs(self, request: RunRequest) -> tuple[Config, Script | None]:
        """Validate everything the user gave before anything is created."""
        config = load_config(request.repo.expanduser().resolve(), request.config_path)
        if request.model:
            config = config.model_copy(
                update={"agent": config.agent.model_copy(update={"model": request.model})}
            )
        if request.mode == "regress":
            grants = _evaluation_grants(list(config.gateway.grants))
            config = config.model_copy(
                update={"gateway": config.gateway.model_copy(update={"grants": grants})}
            )
        if request.incident is not None:
            grants = incident_grants(list(config.gateway.grants), request.incident)
            config = config.model_copy(
                update={"gateway": config.gateway.model_copy(update={"grants": grants})}
            )
        script: Script | None = request.cassette
        if script is None and request.playbook is not None:
            if is_cassette_file(request.playbook):
                script = Cassette.load(request.playbook)
            else:
                script = Playbook.from_path(request.playbook)
        return config, script

    def run(self, request: RunRequest) -> str:
        """Run a task to awaiting_approval (or failed) and return the run id."""
        from corral.outputs import redact_logging

        redact_logging()  # what this run resolves is redacted from every log record of the process
        config, playbook = self.prepare_inputs(request)
        self._config = config
        repo_info = inspect_repo(request.repo.resolve(), config.project.base_branch)
        if request.base_commit:
            if not commit_exists(repo_info.root, request.base_commit):
                raise WorkspaceError(
                    f"{repo_info.root}: the recorded base commit {request.base_commit[:12]} no longer exists",
                    hint="it was rewritten or garbage-collected: this task cannot be re-run from its start",
                )
            repo_info = replace(repo_info, base_commit=request.base_commit, dirty_paths=())
        backend = self._services.sandbox_backend()  # fails early when no Docker Engine runs
        return _Run.start(
            self._services, self._observers, request, config, playbook, repo_info, backend
        ).execute()

    def audit(self) -> AuditLog:
        """The audit log of the project the last run ran in."""
        return self._services.audit(self._config)

    def record(self, run_id: str) -> RunRecord:
        """The run's record, from the store of the project it ran in (its team, its stores)."""
        return self._services.state(self._config).get_run(run_id)


class _Run:
    """One run, from its recorded creation to its recorded end. Each phase is one method.

    `corral shell` (corral.shell.session) is a subclass: it replaces only how the agent is driven and
    what the agent's sandbox gets mounted, and keeps every other phase, so both share one copy.
    """

    empty_is_terminal = False
    """Whether a run whose branch ends with no commit ends as no_changes (and its branch is deleted)
    rather than going on to checks; a headless run goes on, a shell session ends."""

    def __init__(
        self,
        services: Services,
        request: RunRequest,
        config: Config,
        playbook: Script | None,
        repo_info: RepoInfo,
        backend: SandboxBackend,
        run_id: str,
        recorder: RunRecorder,
        sink: EventSink,
        evidence: EvidenceCollector | None = None,
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
        self.evidence = evidence or EvidenceCollector()
        """Incident reads the run's gateway audited (it watches `sink`): the result lists them."""
        self.resources = _Resources()
        self.image: str | None = None
        """The image every sandbox of this run uses, resolved (and verified) once in prepare."""
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
        playbook: Script | None,
        repo_info: RepoInfo,
        backend: SandboxBackend,
    ) -> Self:
        """Record the run (queued) and open its audit chain."""
        from corral.sandbox.project_image import repository_name

        state = services.state(config)
        project = state.ensure_project(
            name=config.project.name,
            repo=str(repo_info.root),
            team=config.project.team,
            image=config.sandbox.image_name or repository_name("project", config.project.name),
            config_snapshot=config.model_dump(mode="json"),
        )
        record = state.create_run(
            project=project.name,
            task=request.task,
            repo=str(repo_info.root),
            base_commit=repo_info.base_commit,
            model=config.agent.model,
            small_model=config.agent.small_model,
            meta={**request.meta, "mode": request.mode} if request.mode != "run" else request.meta,
            requester=request.requester or current_user(),
        )
        state.update_run(record.run_id, pid=os.getpid())
        audit = services.audit(config)
        if not audit.online:
            services.progress(
                f"warning: {audit.status().description}; events are kept in the local spool and shipped later"
            )
        recorder = audit.for_run(record.run_id, team=config.project.team)
        evidence = EvidenceCollector()
        sink = ObservedSink(recorder, [*observers, evidence])
        return cls(
            services, request, config, playbook, repo_info, backend, record.run_id, recorder, sink, evidence
        )

    def move(self, to: Phase, why: str = "") -> None:
        self.state.transition(self.run_id, to, why)
        self.sink.emit(RunPhase(from_phase=self.phase.value, to_phase=to.value, reason=why))
        self.phase = to

    def execute(self) -> str:
        started = time.monotonic()
        reason = ""
        try:
            self.record_creation()
            self.check_pin()
            self.move(Phase.PREPARING)
            prepared = self.prepare()
            self.move(Phase.RUNNING)
            self.drive_agent(prepared)
            check_disk(self.services.settings.home)
            self.commit()
            if self.empty_is_terminal and not self.branch_has_commits():
                self.move(Phase.NO_CHANGES, "the session changed nothing")
            else:
                self.move(Phase.CHECKING)
                check = self.run_checks()
                outcome = "checks passed" if check.passed else "checks failed"
                if self.request.mode == "run":  # a regression or replay run never deploys nor opens a PR
                    self.stage_requested(tuple(prepared.gateway.binding.stage_requests), check)
                    self.open_pull_request()
                self.move(Phase.AWAITING_APPROVAL if self.request.mode == "run" else Phase.EVALUATED, outcome)
        except KeyboardInterrupt:
            reason = "interrupted (Ctrl-C)"
            raise
        except CorralError as exc:
            reason = with_disk(self.services.settings.home, exc.message)
        except Exception as exc:
            reason = with_disk(self.services.settings.home, f"internal error: {type(exc).__name__}: {exc}")
            if not low_space(self.services.settings.home):
                raise  # a full disk explains the error: recorded as the run's failure, not a crash
        finally:
            self.release()
            if self.phase not in AT_REST | TERMINAL:
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
        requester = self.state.get_run(self.run_id).requester
        exposed = sorted(self.config.agent_secrets())
        if exposed:
            # The agent may print, commit or send such a value anywhere its tools reach: say so.
            self.services.progress(
                f'WARNING: secrets exposed to the agent\'s sandbox (expose = "agent"): {", ".join(exposed)}'
            )
        self.sink.emit(
            RunCreated(
                actor=f"human:{requester}" if requester else "system",
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

    def check_pin(self) -> None:
        """A run uses the project's pinned models; only a candidate's regression run may differ."""
        from corral.agent.surface import check_config

        pin = self.state.current_pin(self.config.project.name)
        if pin is not None and self.request.mode != "regress":
            check_config(pin, self.config)

    def check_surface(self, data: dict[str, Any], gateway_tools: list[str]) -> None:
        """Claude Code's init report: record it, and hold it against the pin (not in a candidate's
        regression run, whose CLI may differ by design; a replay compares it with its original)."""
        from corral.agent.surface import ToolSurface, check_surface

        surface = ToolSurface.from_init(data, gateway_tools)
        self.sink.emit(
            AgentInit(
                claude_code_version=surface.claude_code_version,
                tools=list(surface.tools),
                gateway_tools=list(surface.gateway_tools),
                tool_surface_hash=surface.hash,
            ),
            durable=True,
        )
        pin = self.state.current_pin(self.config.project.name)
        if pin is not None and self.request.mode == "run":
            check_surface(pin, surface, self.image or str(self.config.sandbox.image))

    def prepare(self) -> _Prepared:
        """Worktree, sockets, model proxy, sandbox with its self-test, gateway: all a run needs."""
        self.warm.start()  # from here the main thread mostly waits on git, Docker and the proxy
        config, resources = self.config, self.resources
        self.image = self.services.ensure_images(config, self.repo_info.root)
        workspace = resources.workspace = self.open_workspace()
        hand_over(workspace, AGENT_UID)
        self.base_protected = protected_in_commit(workspace, self.protection)
        socket_dir = resources.socket_dir = self.services.settings.run_socket_dir(self.run_id)
        socket_dir.mkdir(parents=True, exist_ok=True)
        socket_dir.chmod(0o755)  # the sandbox's uid must reach the sockets inside
        files = self.agent_files(socket_dir)
        # The container is made and checked (mostly waiting on the Docker Engine) while this thread
        # starts the proxy and the gateway (mostly Python); the agent starts only once both are done.
        sandboxing = ThreadPoolExecutor(1, thread_name_prefix="corral-sandbox")
        checked = sandboxing.submit(self.checked_sandbox, socket_dir, files)
        try:
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
            prefs = self.services.preferences_for(config, self.request.task, self.request.preference_ids)
            if prefs.ids:
                self.sink.emit(PrefsInjected(preference_ids=list(prefs.ids)))
                self.state.update_run(self.run_id, preference_ids=[int(i) for i in prefs.ids])
            self.warm.join()
            gateway = self.services.start_gateway(
                config,
                self.repo_info.root,
                self.run_id,
                workspace.branch,
                socket_dir / "gateway.sock",
                self.sink,
            )
            resources.stoppers.append(gateway.stop)
        finally:
            # Never hand back the run's resources while its container is still being made.
            futures.wait([checked])
            sandboxing.shutdown()
        sandbox = checked.result()
        if isinstance(self.playbook, Cassette) and self.request.mode == "replay":
            from corral.gateway.recorded import serve_recorded

            recorded = [(r.tool_name, r.output, r.is_error) for r in self.playbook.tool_results]
            serve_recorded(gateway.gateway, recorded)
        return _Prepared(sandbox, model_token, gateway, prefs, proxy.budget, proxy.failures)

    def checked_sandbox(self, socket_dir: Path, files: dict[str, Path]) -> Sandbox:
        """The agent's sandbox, after the egress self-test and the non-dumpable check passed on it.

        The two checks are independent execs, so they run at once; both must pass.
        """
        bridges = {MODEL_PORT: "model.sock", GATEWAY_PORT: "gateway.sock"}
        sandbox = self.create_sandbox("agent", socket_dir, bridges, files)
        with ThreadPoolExecutor(1, thread_name_prefix="corral-nodump") as pool:
            nodump = pool.submit(check_nodump, sandbox)
            self.self_test(sandbox)
            nodump.result()
        return sandbox

    def open_workspace(self) -> Workspace:
        """The run's worktree: a new branch `corral/<run-id>` at the base commit."""
        return create_worktree(self.repo_info, self.run_id, self.services.settings.worktrees_dir)

    def agent_files(self, socket_dir: Path) -> dict[str, Path]:
        """Host files bound read-only into the agent's sandbox (container path -> host path)."""
        return {}

    def policy(self) -> PathPolicy:
        return PathPolicy(
            self.config.sandbox.workdir, self.protection.readonly.patterns, self.protection.hidden.patterns
        )

    def agent_settings(self, prepared: _Prepared) -> AgentSettings:
        """What the CLI inside the sandbox is given: the proxy, the run token, the gateway, the prompt."""
        from corral.agent.claude import AgentSettings

        return AgentSettings.from_config(
            self.config,
            model_url=f"http://127.0.0.1:{MODEL_PORT}",
            model_token=prepared.model_token,
            system_append=prepared.prefs.section,
            mcp_servers=prepared.gateway.mcp_config(f"http://127.0.0.1:{GATEWAY_PORT}/mcp")["mcpServers"],
            allowed_mcp_tools=tuple(prepared.gateway.allowed_tool_names()),
            exposed_secrets=sandbox_env(self.config, "agent", self.sink),
        )

    def drive_agent(self, prepared: _Prepared) -> None:
        from corral.agent.claude import ClaudeDriver

        self.state.update_run(self.run_id, started_at=datetime.now(UTC), container_id=prepared.sandbox.id)
        policy = self.policy()
        settings = self.agent_settings(prepared)
        wrapper = self.services.settings.sockets_dir / f"{self.run_id}.wrapper"
        self.resources.stoppers.append(lambda: wrapper.unlink(missing_ok=True))
        gateway_tools = prepared.gateway.surface()
        outcome = ClaudeDriver(
            prepared.sandbox,
            self.sink,
            policy,
            settings,
            wrapper,
            on_init=lambda data: self.check_surface(data, gateway_tools),
        ).run(self.request.task)
        self.state.update_run(
            self.run_id,
            cost_usd=outcome.cost_usd,
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            result={
                "turns": outcome.turns,
                "stop_reason": outcome.stop_reason,
                # Redacted before it is cut: a cut through a value would leave a piece no form matches.
                "text": process_redactor().redact_text(outcome.result)[:4000],
                **({"evidence": self.evidence.as_result()} if self.evidence.items else {}),
                **({"incident": self.request.incident.as_result()} if self.request.incident else {}),
            },
        )
        self.remove_sandboxes()
        if prepared.budget.exhausted:
            raise RunError(
                f"budget exhausted: {prepared.budget.exhausted}",
                hint="raise the limit under [agent] in corral.toml, or give the agent a smaller task",
            )
        upstream_failed = prepared.failures.failure()
        if outcome.is_error and upstream_failed:
            if outcome.timed_out:
                upstream_failed += f"; then the {outcome.stop_reason} was reached"
            raise ModelError(
                upstream_failed,
                hint="the model upstream is failing, not the task: run it again later; "
                "[agent] model_retries sets how often each request is retried",
            )
        if outcome.is_error:
            raise RunError(f"the agent did not finish: {outcome.stop_reason}")

    def commit(self) -> CommitInfo | None:
        """Commit the agent's change on the run branch; a change to a protected path fails the run."""
        workspace = self.resources.workspace
        assert workspace is not None
        message = f"corral: {self.request.task}\n\nRun: {self.run_id}"
        commit = commit_changes(workspace, message, self.protection, self.config.limits)
        if commit is None:
            return None
        self.sink.emit(
            CommitMade(
                commit=commit.commit,
                branch=workspace.branch,
                files=list(commit.files),
                diff_stat=commit.diff_stat,
                patch=commit.patch,
            )
        )
        meta = {**self.state.get_run(self.run_id).meta, "head_commit": commit.commit}
        self.state.update_run(self.run_id, diffstat=commit.diff_stat, meta=meta)
        self.head_commit = commit.commit
        return commit

    def branch_has_commits(self) -> bool:
        workspace = self.resources.workspace
        assert workspace is not None
        return workspace.git(["rev-parse", "HEAD"]).strip() != workspace.base_commit

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
                output=process_redactor().redact_text(result.output)[-20000:],
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

    def open_pull_request(self) -> None:
        """The run's pull request with the checks on it; corral opens it when the agent did not."""
        if not self.head_commit:
            return
        from corral.delivery.pr import ensure_pull_request

        record = self.state.get_run(self.run_id)
        summary = str((record.result or {}).get("text", ""))
        forge = self.services.forge(self.config)
        pr, opened = ensure_pull_request(
            forge, record, self.config.project.base_branch, summary, self.recorder.redactor
        )
        if opened:
            self.sink.emit(PrOpened(number=pr.number, url=pr.url, branch=pr.head))

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
