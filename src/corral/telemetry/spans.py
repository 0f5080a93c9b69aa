"""One run's audit events, as they are stored, turned into OpenTelemetry spans.

The tree (docs/observability.md):

    corral.run                          the run, RunCreated → RunFinished (in the process that ran it)
      corral.prepare / .agent / .checks one per working phase, RunPhase → the next RunPhase
        chat MODEL                      ModelRequest → ModelResponse (same exchange id)
        execute_tool TOOL               ToolCall → ToolResult / ToolDenied (same tool call id)
          execute_tool forge.…          GatewayDecision → GatewayCall, under Claude Code's MCP call
        corral.check                    CheckResult (its duration)
      corral.sandbox PURPOSE            SandboxCreated → SandboxRemoved (same container)
    corral.command                      a later command on the run (approve, promote, reject, gc, ...)

The trace id and the root span id are derived from the run id, so a later command's spans (an approval
days later, in another process) join the run's trace. Attributes carry ids, names, counts, models,
outcomes and timings: never a prompt, a command, a tool input or output, or a model's text. Every
string is cut short and stripped of control characters, because the agent chose many of them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags, Tracer

from corral.events import (
    AgentInit,
    AgentStopped,
    AnyEvent,
    ApprovalGranted,
    ApprovalRejected,
    CheckResult,
    CommitMade,
    DeployFailed,
    DeployPromoted,
    DeployRolledBack,
    DeployStaged,
    FileEdit,
    GatewayCall,
    GatewayDecision,
    MergeMade,
    MergeRefused,
    ModelRefused,
    ModelRequest,
    ModelResponse,
    PrefsInjected,
    PrOpened,
    RunCreated,
    RunFinished,
    RunPhase,
    SandboxCreated,
    SandboxRemoved,
    SandboxSelfTest,
    SecretRequested,
    ShellCommand,
    ToolCall,
    ToolDenied,
    ToolResult,
)
from corral.telemetry.ids import RunIds, run_root_span_id, run_trace_id

AttrValue = str | bool | int | float | Sequence[str]
Attrs = dict[str, AttrValue]

STEP_SPANS: dict[str, str] = {
    "preparing": "corral.prepare",
    "running": "corral.agent",
    "checking": "corral.checks",
    "approved": "corral.merge",
    "merged": "corral.stage",
}
"""The phases a process works through, each a span; the others wait for a human or end the run."""

MCP_PREFIX = "mcp__corral__"
"""How Claude Code names a gateway tool: `mcp__corral__` + the gateway's exposed name."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
MAX_ATTR = 256


def clean(text: str, limit: int = MAX_ATTR) -> str:
    """A string fit for a span attribute: no control or bidi characters, at most `limit` characters."""
    text = _UNSAFE.sub("?", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clean_attrs(attrs: Mapping[str, AttrValue | None]) -> Attrs:
    out: Attrs = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, str):
            out[key] = clean(value)
        elif isinstance(value, bool | int | float):
            out[key] = value
        else:
            out[key] = [clean(v) for v in value]
    return out


def _ns(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(microseconds=1) * 1000


@dataclass
class _Open:
    span: Span
    name: str = ""


@dataclass
class RunTrace:
    """The spans of one run's recorder in this process, built event by event (one thread)."""

    tracer: Tracer
    ids: RunIds
    run_id: str
    team: str
    root: Span | None = None
    command: Span | None = None
    phase: Span | None = None
    models: dict[str, Span] = field(default_factory=dict)
    tools: dict[str, _Open] = field(default_factory=dict)
    gateway: dict[tuple[str, str, str], list[Span]] = field(default_factory=dict)
    sandboxes: dict[str, Span] = field(default_factory=dict)
    ending: dict[str, tuple[Span, int]] = field(default_factory=dict)
    """Tool calls whose result came, held until the shell or edit event that follows it (or any other
    event) so that event's attributes still land on the span."""
    asked_by: dict[str, SpanContext] = field(default_factory=dict)
    """tool_use id → the chat span whose response asked for it (linked from the tool's span)."""
    now: Callable[[], int] = time.time_ns

    # ---- structure ---------------------------------------------------------------------------

    def _base(self) -> Attrs:
        return _clean_attrs({"corral.run_id": self.run_id, "corral.team": self.team or None})

    def _start(
        self,
        name: str,
        ts: int,
        attrs: Mapping[str, AttrValue | None],
        *,
        parent: Span | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        links: Sequence[Link] = (),
    ) -> Span:
        context = trace.set_span_in_context(parent or self._container())
        return self.tracer.start_span(
            clean(name, 128),
            context=context,
            kind=kind,
            attributes={**self._base(), **_clean_attrs(attrs)},
            links=links,
            start_time=ts,
        )

    def _container(self) -> Span:
        """Where a new span hangs: the current phase, else the run (or this command's span)."""
        if self.phase is not None:
            return self.phase
        return self._top()

    def _top(self) -> Span:
        if self.root is not None:
            return self.root
        if self.command is None:
            # A later command on the run: its spans join the run's trace under the run's root span,
            # which a process long gone ended.
            remote = SpanContext(
                run_trace_id(self.run_id),
                run_root_span_id(self.run_id),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
            self.command = self._start(
                "corral.command", self.now(), {}, parent=trace.NonRecordingSpan(remote)
            )
        return self.command

    def _event(self, name: str, ts: int, attrs: Mapping[str, AttrValue | None]) -> None:
        self._container().add_event(name, _clean_attrs(attrs), timestamp=ts)

    # ---- events --------------------------------------------------------------------------------

    def apply(self, event: AnyEvent) -> None:
        """Events not named here (comments, prompts, ...) leave no trace: they carry only text."""
        ts = _ns(event.ts)
        if not isinstance(event, ShellCommand | FileEdit):
            self._end_results()
        match event:
            case RunCreated():
                self.run_created(event, ts)
            case RunPhase():
                self.run_phase(event, ts)
            case RunFinished():
                self.run_finished(event, ts)
            case ModelRequest():
                self.model_request(event, ts)
            case ModelResponse():
                self.model_response(event, ts)
            case ModelRefused():
                self.model_refused(event, ts)
            case ToolCall():
                self.tool_call(event, ts)
            case ToolDenied():
                self.tool_denied(event, ts)
            case ToolResult():
                self.tool_result(event, ts)
            case ShellCommand():
                self.shell_command(event, ts)
            case FileEdit():
                self.file_edit(event, ts)
            case GatewayDecision():
                self.gateway_decision(event, ts)
            case GatewayCall():
                self.gateway_call(event, ts)
            case SandboxCreated():
                self.sandbox_created(event, ts)
            case SandboxRemoved():
                self.sandbox_removed(event, ts)
            case SandboxSelfTest():
                self._event(event.kind, ts, {"corral.selftest.passed": event.passed})
            case CheckResult():
                self.check_result(event, ts)
            case AgentInit():
                self.agent_init(event, ts)
            case AgentStopped():
                self.agent_stopped(event, ts)
            case CommitMade():
                self.commit_made(event, ts)
            case PrOpened():
                self.pr_opened(event, ts)
            case SecretRequested():
                attrs = {"corral.secret.name": event.name, "corral.secret.provider": event.provider}
                self._event(event.kind, ts, attrs)
            case (
                ApprovalGranted()
                | ApprovalRejected()
                | MergeMade()
                | MergeRefused()
                | DeployStaged()
                | DeployPromoted()
                | DeployFailed()
                | DeployRolledBack()
                | PrefsInjected()
            ):
                self.delivered(event, ts)

    def run_created(self, event: RunCreated, ts: int) -> None:
        self.ids.pin(run_trace_id(self.run_id), run_root_span_id(self.run_id))
        self.root = self.tracer.start_span(
            "corral.run",
            context=trace.set_span_in_context(trace.INVALID_SPAN),
            attributes={
                **self._base(),
                **_clean_attrs(
                    {
                        "gen_ai.operation.name": "invoke_agent",
                        "gen_ai.agent.name": "corral",
                        "gen_ai.request.model": event.model,
                        "corral.small_model": event.small_model,
                        "corral.branch": event.branch,
                        "corral.base_commit": event.base_commit,
                        "corral.config_hash": event.config_hash,
                        "corral.actor": event.actor,
                    }
                ),
            },
            start_time=ts,
        )

    def run_phase(self, event: RunPhase, ts: int) -> None:
        self._end_phase(ts)
        name = STEP_SPANS.get(event.to_phase)
        if name is None:
            self._event(
                "run.phase", ts, {"corral.phase": event.to_phase, "corral.phase.reason": event.reason}
            )
            return
        attrs: dict[str, AttrValue | None] = {"corral.phase": event.to_phase}
        if event.to_phase == "running":
            attrs |= {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "claude-code"}
        self.phase = self._start(name, ts, attrs, parent=self._top())

    def _end_phase(self, ts: int) -> None:
        if self.phase is not None:
            self.phase.end(end_time=ts)
            self.phase = None

    def run_finished(self, event: RunFinished, ts: int) -> None:
        top = self._top()
        top.set_attributes(
            _clean_attrs(
                {
                    "corral.run.phase": event.phase,
                    "corral.run.reason": event.reason or None,
                    "corral.run.duration_ms": event.duration_ms,
                }
            )
        )
        if event.phase == "failed":
            top.set_status(Status(StatusCode.ERROR, clean(event.reason or "failed")))
        self.finish(ts)

    def finish(self, ts: int | None = None) -> None:
        """End every span still open (the recorder closed, or the run finished)."""
        end = self.now() if ts is None else ts
        self._end_results()
        unfinished = Status(StatusCode.ERROR, "unfinished when the run's recording ended")
        for span in [*self.models.values(), *(o.span for o in self.tools.values())]:
            span.set_status(unfinished)
            span.end(end_time=end)
        for spans in self.gateway.values():
            for span in spans:
                span.set_status(unfinished)
                span.end(end_time=end)
        for span in self.sandboxes.values():
            span.end(end_time=end)
        self.models, self.tools, self.gateway, self.sandboxes = {}, {}, {}, {}
        self._end_phase(end)
        for top in (self.root, self.command):
            if top is not None:
                top.end(end_time=end)
        self.root = self.command = None

    # model requests

    def model_request(self, event: ModelRequest, ts: int) -> None:
        self.models[event.exchange_id] = self._start(
            f"{event.operation} {event.request_model}",
            ts,
            {
                "gen_ai.operation.name": event.operation,
                "gen_ai.system": event.system,
                "gen_ai.provider.name": event.system,
                "gen_ai.request.model": event.request_model,
                "corral.exchange_id": event.exchange_id,
                "corral.model.messages": event.messages,
                "corral.model.tools": event.tools,
            },
            kind=SpanKind.CLIENT,
        )

    def model_response(self, event: ModelResponse, ts: int) -> None:
        span = self.models.pop(event.exchange_id, None)
        if span is None:
            return
        span.set_attributes(
            _clean_attrs(
                {
                    "gen_ai.response.model": event.response_model or None,
                    "gen_ai.response.id": event.response_id or None,
                    "gen_ai.usage.input_tokens": event.input_tokens,
                    "gen_ai.usage.output_tokens": event.output_tokens,
                    "gen_ai.response.finish_reasons": [event.stop_reason] if event.stop_reason else None,
                    "corral.model.latency_ms": round(event.latency_ms, 3),
                    "corral.model.tool_uses": len(event.tool_uses),
                }
            )
        )
        if event.stop_reason == "error":
            span.set_status(Status(StatusCode.ERROR, "the model upstream failed"))
        for use in event.tool_uses:
            self.asked_by[use.id] = span.get_span_context()
        span.end(end_time=ts)

    def model_refused(self, event: ModelRefused, ts: int) -> None:
        span = self._start(
            f"chat {event.request_model}",
            ts,
            {"gen_ai.operation.name": "chat", "gen_ai.request.model": event.request_model},
            kind=SpanKind.CLIENT,
        )
        span.set_status(Status(StatusCode.ERROR, clean(event.reason)))
        span.end(end_time=ts)

    # tool calls, as Claude Code reported them from the sandbox

    def _tool_span(self, name: str, call_id: str, ts: int) -> Span:
        asked = self.asked_by.pop(call_id, None)
        return self._start(
            f"execute_tool {name}",
            ts,
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "gen_ai.tool.call.id": call_id,
                "corral.reported_by": "sandbox",
            },
            links=[Link(asked)] if asked is not None else (),
        )

    def tool_call(self, event: ToolCall, ts: int) -> None:
        self.tools[event.tool_call_id] = _Open(
            self._tool_span(event.tool_name, event.tool_call_id, ts), event.tool_name
        )

    def tool_denied(self, event: ToolDenied, ts: int) -> None:
        opened = self.tools.pop(event.tool_call_id, None)
        span = opened.span if opened else self._tool_span(event.tool_name, event.tool_call_id, ts)
        span.set_attributes(_clean_attrs({"corral.tool.denied": True, "corral.tool.rule": event.rule}))
        span.set_status(Status(StatusCode.ERROR, clean(f"denied: {event.rule}")))
        span.end(end_time=ts)

    def tool_result(self, event: ToolResult, ts: int) -> None:
        opened = self.tools.pop(event.tool_call_id, None)
        if opened is None:
            return
        if event.is_error:
            opened.span.set_status(Status(StatusCode.ERROR, "the tool reported an error"))
        self.ending[event.tool_call_id] = (opened.span, ts)

    def _end_results(self) -> None:
        for span, ts in self.ending.values():
            span.end(end_time=ts)
        self.ending = {}

    def _tool_of(self, call_id: str) -> Span | None:
        ended = self.ending.get(call_id)
        opened = self.tools.get(call_id)
        return ended[0] if ended is not None else opened.span if opened is not None else None

    def shell_command(self, event: ShellCommand, ts: int) -> None:
        span = self._tool_of(event.tool_call_id)
        if span is not None and event.exit_code is not None:
            span.set_attribute("corral.shell.exit_code", event.exit_code)

    def file_edit(self, event: FileEdit, ts: int) -> None:
        span = self._tool_of(event.tool_call_id)
        if span is not None:
            span.set_attribute("corral.file.edited", True)

    # gateway calls, as the host's gateway saw them

    def gateway_decision(self, event: GatewayDecision, ts: int) -> None:
        caller = self._mcp_caller(event.tool_name)
        span = self._start(
            f"execute_tool {event.tool_name or '(refused token)'}",
            ts,
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": event.tool_name or None,
                "corral.reported_by": "gateway",
                "corral.gateway.allowed": event.allowed,
                "corral.gateway.rule": event.rule or None,
                "corral.gateway.policy_version": event.policy_version or None,
            },
            parent=caller,
            kind=SpanKind.SERVER,
        )
        if not event.allowed:
            span.set_status(Status(StatusCode.ERROR, clean(f"refused by the gateway: {event.rule}")))
        if not event.tool_name:  # a refused token: no call follows
            span.end(end_time=ts)
            return
        self.gateway.setdefault((event.token_id, event.tool_name, event.arguments_hash), []).append(span)

    def _mcp_caller(self, tool: str) -> Span | None:
        """The open Claude Code tool call this gateway call serves, by its MCP name."""
        if not tool:
            return None
        wanted = MCP_PREFIX + tool.replace(".", "_", 1)
        for opened in reversed(self.tools.values()):
            if opened.name == wanted:
                return opened.span
        return None

    def gateway_call(self, event: GatewayCall, ts: int) -> None:
        waiting = self.gateway.get((event.token_id, event.tool_name, event.arguments_hash))
        if not waiting:
            return
        span = waiting.pop(0)
        span.set_attributes(
            _clean_attrs(
                {
                    "corral.gateway.outcome": event.outcome,
                    "corral.gateway.access": event.access or None,
                    "corral.gateway.result_bytes": event.result_bytes,
                    "corral.gateway.upstream_ms": event.upstream_ms,
                }
            )
        )
        if event.outcome not in ("ok", "denied"):
            span.set_status(Status(StatusCode.ERROR, clean(f"upstream outcome: {event.outcome}")))
        span.end(end_time=ts)

    # sandboxes, checks, delivery

    def sandbox_created(self, event: SandboxCreated, ts: int) -> None:
        self.sandboxes[event.container_id] = self._start(
            f"corral.sandbox {event.purpose}",
            ts,
            {
                "container.id": event.container_id,
                "container.image.name": event.image,
                "corral.sandbox.purpose": event.purpose,
            },
            parent=self._top(),
        )

    def sandbox_removed(self, event: SandboxRemoved, ts: int) -> None:
        span = self.sandboxes.pop(event.container_id, None)
        if span is not None:
            span.end(end_time=ts)

    def check_result(self, event: CheckResult, ts: int) -> None:
        span = self._start(
            "corral.check",
            ts - event.duration_ms * 1_000_000,
            {"corral.check.exit_code": event.exit_code, "corral.check.passed": event.passed},
        )
        span.end(end_time=ts)

    def agent_init(self, event: AgentInit, ts: int) -> None:
        self._event(
            event.kind,
            ts,
            {
                "corral.claude_code.version": event.claude_code_version,
                "corral.tool_surface_hash": event.tool_surface_hash,
                "corral.tools": len(event.tools) + len(event.gateway_tools),
            },
        )

    def agent_stopped(self, event: AgentStopped, ts: int) -> None:
        self._container().set_attributes(
            _clean_attrs(
                {
                    "corral.agent.stop_reason": event.reason,
                    "corral.agent.turns": event.turns,
                    "corral.agent.cost_usd": event.cost_usd,
                }
            )
        )

    def commit_made(self, event: CommitMade, ts: int) -> None:
        self._top().set_attribute("corral.commit", clean(event.commit))
        self._event(event.kind, ts, {"corral.commit": event.commit, "corral.commit.files": len(event.files)})

    def pr_opened(self, event: PrOpened, ts: int) -> None:
        self._top().set_attribute("corral.pr.number", event.number)
        self._event(event.kind, ts, {"corral.pr.number": event.number, "corral.pr.url": event.url or None})

    def delivered(
        self,
        event: ApprovalGranted
        | ApprovalRejected
        | MergeMade
        | MergeRefused
        | DeployStaged
        | DeployPromoted
        | DeployFailed
        | DeployRolledBack
        | PrefsInjected,
        ts: int,
    ) -> None:
        attrs: dict[str, AttrValue | None] = {"corral.actor": event.actor}
        if isinstance(event, ApprovalGranted | ApprovalRejected):
            attrs["corral.approval.subject"] = event.subject
        if isinstance(event, ApprovalGranted):
            attrs |= {"corral.approval.head_sha": event.head_sha, "corral.approval.override": event.override}
        if isinstance(event, MergeMade):
            attrs |= {"corral.merge.commit": event.commit, "corral.merge.base_branch": event.base_branch}
        if isinstance(event, DeployStaged | DeployPromoted | DeployRolledBack):
            attrs |= {"corral.deploy.id": event.deployment_id, "corral.deploy.url": event.url or None}
        if isinstance(event, PrefsInjected):
            attrs["corral.preferences"] = len(event.preference_ids)
        if isinstance(event, MergeRefused | DeployFailed):
            self._container().set_status(Status(StatusCode.ERROR, clean(event.reason)))
        self._event(event.kind, ts, attrs)
