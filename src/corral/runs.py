"""The run lifecycle: a state machine over the components.

queued → preparing → running → checking → awaiting_approval, with failed (and its reason) reachable
from every state. Every step is recorded; the `finally` leaves the run in a recorded state and removes
its containers, sockets and worktree, whatever happened (an error, Ctrl-C, a wall-clock limit).
"""

from __future__ import annotations

import contextlib
import importlib
import secrets as pysecrets
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from corral.agent.policy import PathPolicy
from corral.audit import EventSink
from corral.audit.observed import Observer
from corral.audit.redact import process_redactor
from corral.config import Config, load_config
from corral.diskspace import check_disk, low_space, with_disk
from corral.errors import CorralError, ModelError, RunError, WorkspaceError
from corral.events import (
    AgentInit,
    CheckResult,
    CommitMade,
    DeployStaged,
    PrefsInjected,
    PrOpened,
    RunFinished,
    RunPhase,
)
from corral.incident.evidence import EvidenceCollector
from corral.incident.source import incident_grants
from corral.model.cassette import Cassette, is_cassette_file
from corral.model.playbook import Playbook
from corral.paths import Protection
from corral.run_holdings import RunHoldings
from corral.run_record import creation_event, open_record
from corral.run_request import Prepared as _Prepared
from corral.run_request import Resources as _Resources
from corral.run_request import RunMode, RunRequest, Script, config_hash, evaluation_grants
from corral.sandbox import AGENT_UID, Sandbox, SandboxBackend
from corral.sandbox.nodump import check_nodump
from corral.secrets import sandbox_env
from corral.services import Services
from corral.state.machine import AT_REST, TERMINAL, Phase
from corral.workspace import (
    CommitInfo,
    RepoInfo,
    Workspace,
    commit_changes,
    commit_exists,
    create_worktree,
    hand_over,
    inspect_repo,
    protected_in_commit,
)

if TYPE_CHECKING:
    from corral.agent.claude import AgentSettings
    from corral.audit.log import AuditLog
    from corral.audit.recorder import RunRecorder
    from corral.state.models import RunRecord

__all__ = [
    "GATEWAY_PORT",
    "MODEL_PORT",
    "RunMode",
    "RunOrchestrator",
    "RunRequest",
    "Script",
    "_Prepared",
    "_Run",
    "config_hash",
]

MODEL_PORT = 7301
GATEWAY_PORT = 7302


def _import_agent_and_gateway() -> None:
    importlib.import_module("corral.agent.claude")
    importlib.import_module("corral.gateway.run")


class RunOrchestrator:
    def __init__(self, services: Services, observers: list[Observer] | None = None) -> None:
        self._services = services
        self._observers = observers or []
        self._config: Config | None = None
        self._submitted = False

    def prepare_inputs(self, request: RunRequest) -> tuple[Config, Script | None]:
        """Validate everything the user gave before anything is created."""
        config = load_config(request.repo.expanduser().resolve(), request.config_path)
        if request.model:
            config = config.model_copy(
                update={"agent": config.agent.model_copy(update={"model": request.model})}
            )
        if request.mode == "regress":
            grants = evaluation_grants(list(config.gateway.grants))
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
        """Run a task to awaiting_approval (or failed) and return the run id. With Temporal
        configured the run is a workflow on the fleet, followed here until it rests."""
        run_id = self.submit(request)
        if self._submitted:
            from corral.fleet.submit import wait_run

            assert self._config is not None
            wait_run(self._services, self._config, run_id)
        return run_id

    def submit(self, request: RunRequest) -> str:
        """With Temporal configured: record the run and start its workflow, and return at once.
        Without: the whole run, in this process."""
        from corral.fleet import fleet_target
        from corral.outputs import redact_logging

        redact_logging()  # what this run resolves is redacted from every log record of the process
        config, playbook = self.prepare_inputs(request)
        self._config = config
        target = fleet_target(self._services.settings, config)
        if target is not None:
            from corral.fleet.submit import submit_run

            self._submitted = True
            return submit_run(self._services, self._observers, target, request, config)
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


class _Run(RunHoldings):
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
        self.started = time.monotonic()
        self.ended = False

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
        run_id, recorder, sink, evidence = open_record(services, observers, request, config, repo_info)
        return cls(services, request, config, playbook, repo_info, backend, run_id, recorder, sink, evidence)

    def move(self, to: Phase, why: str = "") -> None:
        self.state.transition(self.run_id, to, why)
        self.sink.emit(RunPhase(from_phase=self.phase.value, to_phase=to.value, reason=why))
        self.phase = to

    def execute(self) -> str:
        with self.ending():
            prepared = self.begin()
            self.agent_step(prepared)
            if not self.ended_empty():
                self.deliver_step(prepared, self.checks_step())
        return self.run_id

    # Each step below is one activity of the run's workflow on the fleet (corral.fleet.host).

    def begin(self, *, created: bool = False) -> _Prepared:
        """Record the run (unless its submitter did: `created`), check its pin, prepare it."""
        self.register_secrets()
        if not created:
            self.record_creation()
        self.check_pin()
        self.move(Phase.PREPARING)
        prepared = self.prepare()
        self.move(Phase.RUNNING)
        return prepared

    def agent_step(self, prepared: _Prepared) -> None:
        self.drive_agent(prepared)
        check_disk(self.services.settings.home)
        self.commit()

    def ended_empty(self) -> bool:
        if self.empty_is_terminal and not self.branch_has_commits():
            self.move(Phase.NO_CHANGES, "the session changed nothing")
            return True
        return False

    def checks_step(self) -> CheckResult:
        self.move(Phase.CHECKING)
        return self.run_checks()

    def deliver_step(self, prepared: _Prepared, check: CheckResult) -> None:
        outcome = "checks passed" if check.passed else "checks failed"
        if self.request.mode == "run":  # a regression or replay run never deploys nor opens a PR
            self.stage_requested(tuple(prepared.gateway.binding.stage_requests), check)
            self.open_pull_request()
        self.move(Phase.AWAITING_APPROVAL if self.request.mode == "run" else Phase.EVALUATED, outcome)

    @contextlib.contextmanager
    def ending(self, *, on_success: bool = True) -> Iterator[None]:
        """Around the steps: whatever ends them, the run ends recorded (`end`); without
        `on_success`, only an error ends it. A CorralError is the run's failure reason and is not
        raised further; anything else is."""
        reason, ok = "", False
        try:
            yield
            ok = True
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
            if on_success or not ok:
                self.end(reason)

    def end(self, reason: str) -> None:
        """Give everything back, fail the run unless it reached rest, and close its chain."""
        self.ended = True
        self.release()
        if self.phase not in AT_REST | TERMINAL:
            with contextlib.suppress(CorralError):
                self.move(Phase.FAILED, reason or "run ended early")
        duration = int((time.monotonic() - self.started) * 1000)
        self.state.update_run(self.run_id, finished_at=datetime.now(UTC))
        self.sink.emit(RunFinished(phase=self.phase.value, reason=reason, duration_ms=duration))
        self.recorder.close()

    # ---- phases --------------------------------------------------------------------------------

    def register_secrets(self) -> None:
        if self.host_key:
            self.sink.register_secret("ANTHROPIC_API_KEY", self.host_key)

    def record_creation(self) -> None:
        self.sink.emit(creation_event(self.services, self.request, self.config, self.repo_info, self.run_id))

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
            from corral.model.proxy import RUN_TOKEN_PREFIX

            model_token = RUN_TOKEN_PREFIX + pysecrets.token_urlsafe(24)
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
        redactor = self.recorder.redactor
        commit = commit_changes(
            workspace,
            message,
            self.protection,
            self.config.limits,
            redactor.names_in if redactor.active else None,
        )
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
        done = set(self.state.get_run(self.run_id).meta.get("staged_targets", []))
        for target in targets:
            if target in done:  # an earlier attempt of this run (on the fleet) staged it: never twice
                continue
            dep = deploy.stage(run_id=self.run_id, ref=self.head_commit, target=target)
            self.sink.emit(DeployStaged(deployment_id=dep.id, url=dep.url, ref=dep.ref))
            done.add(target)
            meta = {**self.state.get_run(self.run_id).meta, "staged_targets": sorted(done)}
            self.state.update_run(self.run_id, meta=meta)

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
