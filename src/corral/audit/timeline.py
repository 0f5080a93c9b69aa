"""A run's events as a timeline: what the agent saw, decided, did, and what shipped.

- saw:      model.request (a summary of the newest user turn), human.prompt (what a human typed),
            and gateway.call of a read-class tool of an incident upstream (sentry, datadog): the
            evidence an incident run read
- decided:  model.response (text, tool_use), tool.denied, gateway.decision
- did:      tool.call, tool.result, shell.command (with exit code), file.edit (with diff),
            gateway.call, secret.requested
- shipped:  check.result, commit.made (with its patch), pr.opened, approval.*, merge.*, deploy.*
- run:      everything else (run.*, sandbox.*, agent.stopped, ...)

Events from Claude Code's hooks are claims made inside the sandbox, so each entry says who reported
it (`host` or `sandbox`), and a tool call that no model response the proxy saw asked for is flagged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel
from rich.console import Console, Group
from rich.markup import escape
from rich.syntax import Syntax
from rich.text import Text

from corral import events as ev
from corral.audit.redact import process_redactor
from corral.display import visible
from corral.events import AnyEvent
from corral.incident.evidence import is_incident_read

Section = Literal["saw", "decided", "did", "shipped", "run"]
_STYLE: dict[str, str] = {
    "saw": "cyan",
    "decided": "magenta",
    "did": "yellow",
    "shipped": "green",
    "run": "dim",
}


class Entry(BaseModel):
    seq: int
    ts: str
    section: Section
    kind: str
    actor: str
    summary: str
    detail: str = ""
    """A diff or an output excerpt, shown under the summary."""
    reported_by: Literal["host", "sandbox"] = "host"
    model_issued: bool | None = None
    """For a tool call: whether a model response recorded by the host's proxy carried its id. False
    means only the sandbox says the call happened (a forged hook call, or a bridge that was taken over)."""


def _short(text: str, limit: int = 160) -> str:
    # Redacted before it is cut (and before whitespace is folded): a cut value matches no form.
    text = " ".join(process_redactor().redact_text(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def entry(event: AnyEvent) -> Entry:
    section: Section = "run"
    summary: str = event.kind
    detail = ""
    match event:
        case ev.ModelRequest():
            section = "saw"
            operation = "" if event.operation == "chat" else f" ({event.operation})"
            summary = (
                f"{event.request_model}{operation}: {event.messages} messages, {event.tools} tools; "
                f"user: {_short(event.last_user)}"
            )
        case ev.HumanPrompt():
            section = "saw"
            summary = f"{event.actor} asked: {_short(event.prompt)}"
        case ev.ModelResponse() if event.operation == "count_tokens":
            section = "decided"
            summary = f"count_tokens: {event.input_tokens} input tokens"
        case ev.ModelResponse():
            section = "decided"
            parts = [f"tool_use {t.name}({_short(str(t.input), 80)})" for t in event.tool_uses]
            if event.text:
                parts.insert(0, f"text: {_short(event.text)}")
            stop = f"  [stop: {event.stop_reason}]" if event.stop_reason else ""
            summary = "; ".join(parts or ["(empty)"]) + stop
        case ev.ToolDenied():
            section = "decided"
            summary = f"DENIED {event.tool_name}: {event.rule}: {event.reason}"
        case ev.GatewayDecision():
            section = "decided"
            summary = f"gateway {'allowed' if event.allowed else 'DENIED'} {event.tool_name} ({event.rule})"
        case ev.ToolCall():
            section = "did"
            summary = f"{event.tool_name} {_short(str(event.input), 120)}"
        case ev.ToolResult():
            section = "did"
            summary = f"{event.tool_name} {'error' if event.is_error else 'ok'}: {_short(event.output, 120)}"
        case ev.ShellCommand():
            section = "did"
            code = "?" if event.exit_code is None else str(event.exit_code)
            summary = f"$ {_short(event.command)}  [exit {code}]"
            detail = event.output[-2000:]
        case ev.FileEdit():
            section = "did"
            summary = f"edit {event.path}"
            detail = event.diff
        case ev.GatewayCall() if is_incident_read(event):
            # An incident run's evidence: what it read from Sentry or Datadog is what it saw.
            section = "saw"
            summary = f"incident read {event.tool_name}({_short(str(event.arguments), 100)}): {event.outcome}"
        case ev.GatewayCall():
            section = "did"
            summary = f"gateway {event.tool_name}: {event.outcome}"
        case ev.SecretRequested():
            section = "did"
            summary = f"secret {event.name} from {event.provider} for {event.requester or '?'}" + (
                f" ({event.purpose})" if event.purpose else ""
            )
        case ev.CheckResult():
            section = "shipped"
            summary = f"check {'PASSED' if event.passed else 'FAILED'} ({event.exit_code}): {event.command}"
        case ev.CommitMade():
            section = "shipped"
            summary = f"commit {event.commit[:12]} on {event.branch}: {len(event.files)} files"
            detail = event.patch
        case ev.PrOpened():
            section = "shipped"
            summary = f"pull request #{event.number} {event.url}"
        case ev.ApprovalGranted() | ev.ApprovalRejected():
            section = "shipped"
            verb = "approved" if event.kind == "approval.granted" else "rejected"
            summary = f"{verb} {event.subject} by {event.actor}: {_short(event.comment)}"
            if isinstance(event, ev.ApprovalGranted):
                override = " (override: checks failed)" if event.override else ""
                summary = f"{summary} at {event.head_sha[:12] or '-'}{override}"
        case ev.DeployRequested():
            section = "did"
            summary = f"asked to stage {event.branch} on {event.target} once the checks pass"
        case ev.DeployStaged() | ev.DeployPromoted():
            section = "shipped"
            summary = f"{event.kind.split('.')[1]} {event.deployment_id} {event.url}"
        case ev.MergeMade():
            section = "shipped"
            summary = f"merged {event.head_sha[:12]} into {event.base_branch} as {event.commit}"
        case ev.MergeRefused():
            section = "shipped"
            summary = f"merge refused: {_short(event.reason)}"
            detail = "\n".join(event.conflicts)
        case ev.DeployFailed():
            section = "shipped"
            summary = f"deploy {event.deployment_id} failed: {_short(event.reason)}"
        case ev.DeployRolledBack():
            section = "shipped"
            summary = f"rolled back production to {event.deployment_id} {event.url}"
        case ev.ReviewComment():
            section = "decided"
            summary = f"review comment ({event.source}): {_short(event.body)}"
        case ev.RunPhase():
            summary = f"phase {event.from_phase} → {event.to_phase} {event.reason}"
        case ev.RunCreated():
            summary = f"task: {_short(event.task)} ({event.repo} @ {event.base_commit[:12]})"
        case ev.RunFinished():
            summary = f"finished: {event.phase} {event.reason}"
        case ev.SandboxCreated():
            summary = f"{event.purpose} sandbox {event.container_id[:12]} from {event.image}"
        case ev.SandboxSelfTest():
            summary = f"egress self-test {'passed' if event.passed else 'FAILED'} {_short(event.detail, 80)}"
        case ev.SandboxRemoved():
            summary = f"sandbox {event.container_id[:12]} removed {event.exit_reason}"
        case ev.AgentStopped():
            summary = f"agent stopped after {event.turns} turns: {event.reason}"
        case ev.RunSubmitted():
            summary = (
                f"workflow {event.workflow_id} on {event.address} ({event.namespace}/{event.task_queue})"
            )
        case ev.RunAttempt():
            retry = f", after: {_short(event.reason)}" if event.attempt > 1 else ""
            summary = (
                f"attempt {event.attempt} on host {event.host_id} (execution {event.workflow_run_id}){retry}"
            )
        case ev.FleetActivity():
            summary = f"{event.activity} on host {event.host_id}, attempt {event.attempt}"
        case ev.AuthSignedIn() | ev.AuthTokenUsed():
            how = "signed in" if event.kind == "auth.signed_in" else "first used an API token"
            summary = f"{event.actor} ({event.role}) {how} from {event.client or '?'}"
        case ev.AuthSignedOut():
            summary = f"{event.actor} signed out from {event.client or '?'}"
        case ev.AuthRefused():
            who = f" as {event.name!r}" if event.name else ""
            summary = f"refused {event.method}{who} from {event.client or '?'}: {event.reason}"
        case _:
            summary = event.kind
    return Entry(
        seq=event.seq,
        ts=event.ts.isoformat(),
        section=section,
        kind=event.kind,
        actor=event.actor,
        summary=summary.strip(),
        detail=detail,
        reported_by="sandbox" if isinstance(event, ev.SandboxReported) else "host",
    )


def timeline(events: Sequence[AnyEvent], *, match_model: bool = True) -> list[Entry]:
    """The entries in seq order. With `match_model`, each tool call is checked against the tool_use
    ids of all the run's model responses (the whole run: a hook may be audited before the response
    that asked for it); pass False for a partial run, where a response may not have arrived yet."""
    entries = [entry(e) for e in sorted(events, key=lambda e: e.seq)]
    if not match_model:
        return entries
    issued = {use.id for e in events if isinstance(e, ev.ModelResponse) for use in e.tool_uses}
    calls = {e.seq: e.tool_call_id for e in events if isinstance(e, ev.ToolCall)}
    return [
        item.model_copy(update={"model_issued": calls[item.seq] in issued}) if item.seq in calls else item
        for item in entries
    ]


_DETAIL_LINES = 20


def _clip(text: str) -> str:
    """The last lines of a long output (the full text is in `--json` and the store)."""
    lines = text.rstrip("\n").splitlines()
    if len(lines) <= _DETAIL_LINES:
        return "\n".join(lines)
    return f"… {len(lines) - _DETAIL_LINES} lines above\n" + "\n".join(lines[-_DETAIL_LINES:])


_UNISSUED = "  [NOT ASKED FOR BY ANY MODEL RESPONSE: only the sandbox reports this call]"


def render(entries: Sequence[Entry], console: Console, *, details: bool = True) -> None:
    for e in entries:
        line = Text.assemble(
            (f"{e.seq:>5} ", "dim"),
            (f"{e.ts[11:19]} ", "dim"),
            (f"{e.section:<8}", _STYLE[e.section]),
            (f"{e.kind:<18} ", "bold"),
            ("sandbox says " if e.reported_by == "sandbox" else "", "italic"),
            Text.from_markup(escape(visible(e.summary))),
            (_UNISSUED if e.model_issued is False else "", "bold red"),
        )
        parts: list[Text | Syntax] = [line]
        if details and e.detail:
            whole = e.kind in ("file.edit", "commit.made")
            lexer = "diff" if whole else "text"
            parts.append(
                Syntax(
                    visible(e.detail if whole else _clip(e.detail)),
                    lexer,
                    theme="ansi_dark",
                    word_wrap=True,
                    padding=(0, 6),
                )
            )
        console.print(Group(*parts))


def counts(entries: Sequence[Entry]) -> dict[str, int]:
    out = {s: 0 for s in _STYLE}
    for e in entries:
        out[e.section] += 1
    return out
