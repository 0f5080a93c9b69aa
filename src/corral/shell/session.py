"""One interactive session: a run whose agent phase is the human at the real Claude Code TUI.

Everything but the agent phase is `corral.runs._Run`'s: the worktree on `corral/<run-id>`, the model
proxy, the gateway token and grants, the hardened sandbox with its self-test, the commit, the checks
in a fresh sandbox, the release. The agent's sandbox also gets the managed settings and the hook
forwarder, bound read-only, and the host serves the hook socket beside model.sock and gateway.sock.

The session ends when the CLI exits (/exit, Ctrl-D) or the terminal closes (SIGHUP). Then it ends as
a run does: commit, checks, awaiting_approval; a session that changed nothing ends as no_changes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from corral.agent.tool_hooks import ToolHooks
from corral.audit.observed import Observer
from corral.audit.redact import Redactor, process_redactor
from corral.config import load_config
from corral.errors import CorralError, RunError, ShellError
from corral.events import AgentStopped
from corral.model.playbook import Playbook
from corral.review import default_reviewer
from corral.runs import GATEWAY_PORT, RunRequest, _Prepared, _Run
from corral.sandbox import Sandbox
from corral.services import Services
from corral.shell import managed, transcripts
from corral.shell.hooks import HookServer, SessionHooks
from corral.state.machine import Phase
from corral.workspace import RepoInfo, Workspace, create_worktree, inspect_repo

if TYPE_CHECKING:
    from corral.agent.claude import AgentSettings

_WRITE_HOME_CONFIG = (
    "import os, sys\n"
    "path = os.path.expanduser('~/.claude.json')\n"
    "with open(path, 'w') as f:\n"
    "    f.write(sys.argv[1])\n"
    "os.chmod(path, 0o600)\n"
)


@dataclass(frozen=True)
class ShellRequest:
    repo: Path
    task: str = ""
    playbook: Path | None = None
    resume: str | None = None
    """A run awaiting approval to reopen, with the CLI's conversation restored."""
    config_path: Path | None = None


def require_terminal() -> None:
    """`corral shell` is for a human at a terminal; without one it says what to use instead."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise ShellError(
            "corral shell needs an interactive terminal (stdin and stdout must be a TTY)",
            hint='for an unattended run use `corral run "TASK" [--playbook FILE]`',
        )


class ShellOrchestrator:
    def __init__(self, services: Services, observers: list[Observer] | None = None) -> None:
        self._services = services
        self._observers = observers or []
        self.user = default_reviewer()

    def open(self, request: ShellRequest) -> str:
        """Run one interactive session to its recorded end and return the run id."""
        require_terminal()
        if request.resume:
            run = self._resumed(request)
        else:
            config = load_config(request.repo.expanduser().resolve(), request.config_path)
            playbook = Playbook.from_path(request.playbook) if request.playbook else None
            repo_info = inspect_repo(request.repo.resolve(), config.project.base_branch)
            backend = self._services.sandbox_backend()
            task = request.task or "interactive session"
            run_request = RunRequest(task=task, repo=repo_info.root, playbook=request.playbook)
            run = _ShellRun.start(
                self._services, self._observers, run_request, config, playbook, repo_info, backend
            )
        run.user = self.user
        run.initial_prompt = request.task
        return run.execute()

    def _resumed(self, request: ShellRequest) -> _ShellRun:
        assert request.resume is not None
        record = self._services.find_run(request.resume)
        if record.phase != Phase.AWAITING_APPROVAL:
            raise RunError(
                f"run {record.run_id} is {record.phase}, not awaiting_approval",
                hint="only a session waiting for approval can be resumed; start a new one with corral shell",
            )
        repo = Path(record.repo)
        config = load_config(repo, request.config_path)
        playbook = Playbook.from_path(request.playbook) if request.playbook else None
        info = inspect_repo(repo, config.project.base_branch)
        repo_info = RepoInfo(info.root, info.base_branch, record.base_commit, info.dirty_paths)
        backend = self._services.sandbox_backend()
        state = self._services.state(config)
        state.update_run(record.run_id, pid=os.getpid())
        recorder = self._services.audit(config).for_run(record.run_id, team=config.project.team)
        from corral.audit.observed import ObservedSink

        sink = ObservedSink(recorder, self._observers)
        run_request = RunRequest(task=record.task, repo=repo, playbook=request.playbook)
        run = _ShellRun(
            self._services, run_request, config, playbook, repo_info, backend, record.run_id, recorder, sink
        )
        run.phase = Phase.AWAITING_APPROVAL
        run.resumed = True
        return run


class _ShellRun(_Run):
    empty_is_terminal = True
    user = "unknown"
    initial_prompt = ""
    resumed = False

    def record_creation(self) -> None:
        if not self.resumed:
            super().record_creation()

    def open_workspace(self) -> Workspace:
        return create_worktree(
            self.repo_info, self.run_id, self.services.settings.worktrees_dir, reopen=self.resumed
        )

    def agent_files(self, socket_dir: Path) -> dict[str, Path]:
        from corral.agent.claude import BUILTIN_TOOLS

        directory = self.services.settings.shell_files_dir / self.run_id
        self.resources.stoppers.append(lambda: shutil.rmtree(directory, ignore_errors=True))
        return managed.write_run_files(directory, list(BUILTIN_TOOLS))

    def drive_agent(self, prepared: _Prepared) -> None:
        from corral.agent.claude import BUILTIN_TOOLS

        sandbox = prepared.sandbox
        self.state.update_run(self.run_id, started_at=datetime.now(UTC), container_id=sandbox.id)
        settings = self.agent_settings(prepared)
        self.sink.register_secret("CORRAL_GATEWAY_TOKEN", prepared.gateway.token)
        allowed = frozenset({*BUILTIN_TOOLS, *settings.allowed_mcp_tools})
        session = SessionHooks(ToolHooks(self.sink, self.policy()), self.sink, f"human:{self.user}", allowed)
        assert self.resources.socket_dir is not None
        server = HookServer(session, self.resources.socket_dir / managed.HOOK_SOCKET)
        self.resources.stoppers.append(server.stop)
        home = json.dumps(managed.home_config(settings.workdir, settings.model_token))
        setup = sandbox.exec(["python3", "-c", _WRITE_HOME_CONFIG, home], timeout=30)
        if setup.exit_code != 0:
            raise ShellError(f"could not prepare the sandbox HOME: {setup.output[-300:]}")
        saved = transcripts.session_dir(self.services.settings.home, self.run_id)
        restored = transcripts.restore(sandbox, saved) if self.resumed else 0
        argv = sandbox.exec_command(
            self.cli_argv(settings, prepared, resume=restored > 0), env=_interactive_env(settings), tty=True
        )
        reason = attach(argv, sandbox)
        redactor = Redactor(forward_to=process_redactor())
        for name, value in (
            ("CORRAL_RUN_TOKEN", settings.model_token),
            ("CORRAL_GATEWAY_TOKEN", prepared.gateway.token),
            ("ANTHROPIC_API_KEY", self.host_key or ""),
        ):
            if value:
                redactor.register(name, value)
        try:
            kept = transcripts.save(sandbox, saved, redactor)
        except CorralError:
            kept = []
        if session.end_reason:
            reason = f"{reason} ({session.end_reason})"
        self.sink.emit(AgentStopped(reason=reason, turns=session.prompts))
        self.state.update_run(
            self.run_id,
            result={"stop_reason": reason, "prompts": session.prompts, "transcripts": len(kept)},
        )
        self.remove_sandboxes()

    def cli_argv(self, settings: AgentSettings, prepared: _Prepared, *, resume: bool) -> list[str]:
        mcp = prepared.gateway.mcp_config(f"http://127.0.0.1:{GATEWAY_PORT}/mcp")
        argv = ["claude", "--model", settings.model, "--mcp-config", json.dumps(mcp), "--strict-mcp-config"]
        if settings.system_append:
            argv += ["--append-system-prompt", settings.system_append]
        if resume:
            argv.append("--continue")
        if self.initial_prompt:
            argv.append(self.initial_prompt)
        return argv


def _interactive_env(settings: AgentSettings) -> dict[str, str]:
    from corral.agent.claude import container_env

    env = container_env(settings)
    env["CLAUDE_CODE_ENTRYPOINT"] = "cli"
    # The terminal's own description, so colours and keys work as in a local `claude`.
    for name in ("TERM", "COLORTERM"):
        value = os.environ.get(name)
        if value and value.isprintable() and len(value) < 64:
            env[name] = value
    env.setdefault("TERM", "xterm-256color")
    return env


def attach(argv: list[str], sandbox: Sandbox) -> str:
    """Run the interactive CLI on the user's terminal until it exits or the terminal closes.

    A closed terminal (SIGHUP) leaves `docker exec`'s process running in the container, so corral
    ends the CLI itself; from then on nothing is written to the dead terminal.
    """
    hung_up: list[bool] = []
    proc = subprocess.Popen(argv)

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        hung_up.append(True)
        _detach_from_terminal()
        proc.terminate()

    previous = signal.signal(signal.SIGHUP, on_hangup)
    try:
        code = proc.wait()
    finally:
        signal.signal(signal.SIGHUP, previous)
    if hung_up:
        # Signals do not cross `docker exec`: end the CLI (and what it was running) inside the sandbox.
        sandbox.exec(["pkill", "-KILL", "-u", "1000", "-x", "claude"], timeout=10)
        return "terminal closed"
    return f"the CLI exited (code {code})"


def _detach_from_terminal() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
