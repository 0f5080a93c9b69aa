"""Drive the real Claude Code CLI inside the run's container through `claude-agent-sdk`.

The SDK runs on the host and talks to a `cli_path` wrapper that `docker exec`s the pinned `claude`
inside the container, so hooks (PreToolUse, PostToolUse, Stop) run on the host with the audit log
and the path policy. The SDK's `env` applies only to the wrapper on the host; the container sees
exactly the variables written into the wrapper, none of the host's.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKError,
    HookContext,
    HookInput,
    HookJSONOutput,
    HookMatcher,
    ResultMessage,
    SystemMessage,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
    query,
)

from corral.agent.policy import PathPolicy
from corral.agent.tool_hooks import ToolHooks, deny_output
from corral.audit import EventSink
from corral.audit.redact import process_redactor
from corral.config import Config
from corral.events import AgentStopped, ToolDenied
from corral.model.upstream_failures import DEFAULT_MODEL_RETRIES
from corral.sandbox import NODUMP_LIBRARY, Sandbox
from corral.tail import Tail

STDERR_LIMIT = 64 * 1024
"""How much of Claude Code's stderr the host keeps (the newest bytes): enough for the reason it died."""

BUILTIN_TOOLS = (
    "Bash",
    "Read",
    "Edit",
    "Write",
    "MultiEdit",
    "Glob",
    "Grep",
    "LS",
    "TodoWrite",
    "NotebookEdit",
)


@dataclass(frozen=True)
class AgentSettings:
    model: str
    small_model: str
    max_turns: int
    timeout_seconds: float
    workdir: str
    model_url: str
    """The model proxy as the container reaches it (through the socat bridge)."""
    model_token: str
    """The per-run placeholder token: the only 'key' the container ever holds."""
    system_append: str = ""
    mcp_servers: dict[str, Any] = field(default_factory=dict)
    allowed_mcp_tools: tuple[str, ...] = ()
    model_retries: int = DEFAULT_MODEL_RETRIES
    """Claude Code's own retries of a failed model request (`CLAUDE_CODE_MAX_RETRIES`): without it,
    2.1.332 retries a 529 ten times over three minutes."""
    exposed_secrets: dict[str, str] = field(default_factory=dict, repr=False)
    """ENV_NAME -> value of the secrets declared `expose = "agent"`: handed to `docker exec` through
    its environment (`-e NAME`), never written into the wrapper script."""

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        model_url: str,
        model_token: str,
        system_append: str = "",
        mcp_servers: dict[str, Any] | None = None,
        allowed_mcp_tools: tuple[str, ...] = (),
        exposed_secrets: dict[str, str] | None = None,
    ) -> AgentSettings:
        """The project's `[agent]` and `[sandbox].workdir`, plus what this run's wiring hands over."""
        return cls(
            model=config.agent.model,
            small_model=config.agent.small_model,
            max_turns=config.agent.max_turns,
            timeout_seconds=config.agent.timeout_seconds,
            workdir=config.sandbox.workdir,
            model_url=model_url,
            model_token=model_token,
            system_append=system_append,
            mcp_servers=mcp_servers or {},
            allowed_mcp_tools=allowed_mcp_tools,
            model_retries=config.agent.model_retries,
            exposed_secrets=exposed_secrets or {},
        )


@dataclass(frozen=True)
class AgentOutcome:
    turns: int
    cost_usd: float
    result: str
    is_error: bool
    stop_reason: str
    timed_out: bool
    input_tokens: int = 0
    output_tokens: int = 0


def container_env(settings: AgentSettings) -> dict[str, str]:
    """Everything the CLI inside the container gets as its environment, on top of the image's.

    PATH is the image's own: a project image puts its virtualenv and node_modules/.bin first.
    """
    return {
        "HOME": "/home/agent",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "ANTHROPIC_BASE_URL": settings.model_url,
        "ANTHROPIC_API_KEY": settings.model_token,
        "ANTHROPIC_SMALL_FAST_MODEL": settings.small_model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": settings.small_model,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_ENTRYPOINT": "sdk-py",
        "CLAUDE_CODE_MAX_RETRIES": str(settings.model_retries),
        # Makes the CLI non-dumpable before its main() runs (and is then removed from its
        # environment): its tools share its uid, and must not reach its stdout or memory. The run
        # checks that the image's library works (corral.sandbox.nodump) before the agent starts.
        "LD_PRELOAD": NODUMP_LIBRARY,
    }


def write_wrapper(sandbox: Sandbox, env: dict[str, str], path: Path, passthrough: Sequence[str] = ()) -> Path:
    """Write the `cli_path` script: `docker exec -i` of `claude` in the container, args passed through."""
    argv = sandbox.exec_command(["claude"], env=env, passthrough=passthrough)
    script = (
        "#!/bin/sh\n# corral: runs the pinned Claude Code inside the run's container\nexec "
        + " ".join(shlex.quote(arg) for arg in argv)
        + ' "$@"\n'
    )
    path.write_text(script)
    path.chmod(0o700)
    return path


def _tool_input(data: HookInput) -> dict[str, Any]:
    """A copy of the hook's `tool_input` (every tool hook carries one; the others give an empty dict)."""
    # HookInput is a union of TypedDicts and only the tool hooks declare `tool_input`, so `.get`
    # is typed `object`; the SDK declares it as dict[str, Any] wherever it exists.
    raw = data.get("tool_input")
    return dict(raw) if isinstance(raw, dict) else {}


class ClaudeDriver:
    def __init__(
        self,
        sandbox: Sandbox,
        sink: EventSink,
        policy: PathPolicy,
        settings: AgentSettings,
        wrapper: Path,
        on_init: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """`on_init` sees Claude Code's init report (version, tools) before the first model turn is
        acted on; raising there (a pin mismatch) ends the session and fails the run."""
        self._on_init = on_init
        self._sandbox = sandbox
        self._sink = sink
        self._settings = settings
        self._wrapper = write_wrapper(
            sandbox, container_env(settings), wrapper, tuple(settings.exposed_secrets)
        )
        self._stderr = Tail(STDERR_LIMIT)
        self._hooks = ToolHooks(sink, policy)
        self._requested: dict[str, str] = {}
        self._stop_hook_fired = False

    @property
    def stderr(self) -> str:
        """The newest Claude Code stderr the host kept (at most STDERR_LIMIT bytes)."""
        return self._stderr.text()

    # ---- hooks (run on the host, in the SDK's event loop) --------------------------------------

    async def _pre_tool_use(self, data: HookInput, tool_use_id: str | None, _: HookContext) -> HookJSONOutput:
        call_id = tool_use_id or str(data.get("tool_use_id", ""))
        decision = self._hooks.pre_tool_use(str(data.get("tool_name", "")), _tool_input(data), call_id)
        if decision.allowed:
            return {}
        output: HookJSONOutput = deny_output("PreToolUse", decision.reason)  # type: ignore[assignment]
        return output

    async def _post_tool_use(
        self, data: HookInput, tool_use_id: str | None, _: HookContext
    ) -> HookJSONOutput:
        call_id = tool_use_id or str(data.get("tool_use_id", ""))
        error = data.get("error") if data.get("hook_event_name") == "PostToolUseFailure" else None
        self._hooks.post_tool_use(
            str(data.get("tool_name", "")),
            _tool_input(data),
            call_id,
            data.get("tool_response"),
            str(error) if error is not None else None,
        )
        return {}

    async def _stop(self, data: HookInput, _id: str | None, _: HookContext) -> HookJSONOutput:
        # The Stop hook fires before the session's result (turns, cost) exists, so `agent.stopped`
        # is recorded from the result in `run`; here only the fact that Claude Code chose to stop.
        self._stop_hook_fired = True
        return {}

    # ---- the session ---------------------------------------------------------------------------

    def options(self) -> ClaudeAgentOptions:
        s = self._settings
        system_prompt: Any = {"type": "preset", "preset": "claude_code"}
        if s.system_append:
            system_prompt["append"] = s.system_append
        return ClaudeAgentOptions(
            cli_path=str(self._wrapper),
            model=s.model,
            fallback_model=None,
            max_turns=s.max_turns,
            system_prompt=system_prompt,
            allowed_tools=[*BUILTIN_TOOLS, *s.allowed_mcp_tools],
            mcp_servers=s.mcp_servers,
            strict_mcp_config=True,
            setting_sources=[],
            permission_mode="default",
            # The host environment must not leak: the wrapper passes only its own -e list into the
            # container, and the SDK's version probe would run the host binary, so skip it.
            env={"CLAUDE_AGENT_SDK_SKIP_VERSION_CHECK": "1", **s.exposed_secrets},
            stderr=self._stderr.push_line,
            hooks={
                "PreToolUse": [HookMatcher(matcher=None, hooks=[self._pre_tool_use], on_failure="block")],
                "PostToolUse": [HookMatcher(matcher=None, hooks=[self._post_tool_use])],
                "PostToolUseFailure": [HookMatcher(matcher=None, hooks=[self._post_tool_use])],
                "Stop": [HookMatcher(matcher=None, hooks=[self._stop])],
            },
        )

    def _audit_unhooked_refusals(self, message: UserMessage) -> None:
        """A call to a tool Claude Code does not offer (an ungranted gateway tool, say) never reaches
        the hooks; record Claude Code's refusal so the attempt is on the audit as a denial."""
        if not isinstance(message.content, list):
            return
        for block in message.content:
            if (
                not isinstance(block, ToolResultBlock)
                or not block.is_error
                or self._hooks.was_hooked(block.tool_use_id)
            ):
                continue
            text = block.content if isinstance(block.content, str) else str(block.content)
            self._sink.emit(
                ToolDenied(
                    tool_name=self._requested.get(block.tool_use_id, ""),
                    tool_call_id=block.tool_use_id,
                    rule="not-offered",
                    reason=process_redactor().redact_text(text)[:500],
                ),
                durable=True,
            )

    async def _session(self, task: str) -> ResultMessage | None:
        result: ResultMessage | None = None
        async for message in query(prompt=task, options=self.options()):
            if isinstance(message, AssistantMessage):
                for block in message.content:
                    if isinstance(block, ToolUseBlock):
                        self._requested[block.id] = block.name
            elif isinstance(message, UserMessage):
                self._audit_unhooked_refusals(message)
            elif isinstance(message, ResultMessage):
                result = message
            elif isinstance(message, SystemMessage) and message.subtype == "init" and self._on_init:
                self._on_init(message.data)
        return result

    def run(self, task: str) -> AgentOutcome:
        """Run the session to its end, the max_turns limit, or the wall-clock limit, and record
        `agent.stopped` with the turns and cost that the run's record (and `corral show`) reports.

        Signals do not cross `docker exec`, so the wall-clock limit stops the container itself; the
        CLI's exit then ends the SDK session.
        """
        outcome = self._run_session(task)
        reason = outcome.stop_reason + (" (stop hook)" if self._stop_hook_fired else "")
        self._sink.emit(AgentStopped(reason=reason, turns=outcome.turns, cost_usd=outcome.cost_usd))
        return outcome

    def _run_session(self, task: str) -> AgentOutcome:
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            self._sandbox.stop(timeout=1.0)

        watchdog = threading.Timer(self._settings.timeout_seconds, expire)
        watchdog.daemon = True
        watchdog.start()
        error = ""
        result: ResultMessage | None = None
        try:
            result = anyio.run(self._session, task)
        except ClaudeSDKError as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            watchdog.cancel()
        if timed_out.is_set():
            return AgentOutcome(
                0, 0.0, "", True, f"wall-clock limit of {self._settings.timeout_seconds:g}s", True
            )
        if result is None:
            lines = self._stderr.lines()[-5:]
            tail = " | ".join(
                process_redactor().redact_text(line).strip()[-500:] for line in lines if line.strip()
            )
            return AgentOutcome(
                0, 0.0, "", True, error or f"Claude Code ended without a result ({tail})", False
            )
        usage = result.usage or {}
        return AgentOutcome(
            turns=result.num_turns,
            cost_usd=result.total_cost_usd or 0.0,
            result=result.result or "",
            is_error=result.is_error,
            stop_reason=result.subtype if result.is_error else (result.stop_reason or result.subtype),
            timed_out=False,
            input_tokens=int(usage.get("input_tokens", 0) or 0),
            output_tokens=int(usage.get("output_tokens", 0) or 0),
        )
