"""The one typed event model every component emits.

Each event is a pydantic model with a literal `kind`. `run_id`, `seq`, `ts`, `actor` and the hash-chain
fields are filled by the audit log when the event is appended, so emitters build events with only
their own payload. Model and tool events carry the OpenTelemetry GenAI attribute names as aliases
(`gen_ai.request.model`, `gen_ai.tool.name`, ...), and serialise by alias.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

Actor = str
"""`agent`, `system`, or `human:<name>`."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    kind: str
    run_id: str = ""
    seq: int = -1
    ts: datetime = Field(default_factory=utcnow)
    actor: Actor = "system"
    prev_hash: str = ""
    hash: str = ""


# ---- run lifecycle ---------------------------------------------------------------------------


class RunCreated(Event):
    kind: Literal["run.created"] = "run.created"
    task: str
    repo: str
    base_commit: str
    branch: str
    config_hash: str
    model: str
    small_model: str
    dirty_paths: list[str] = []


class RunPhase(Event):
    kind: Literal["run.phase"] = "run.phase"
    from_phase: str
    to_phase: str
    reason: str = ""


class RunFinished(Event):
    kind: Literal["run.finished"] = "run.finished"
    phase: str
    reason: str = ""
    duration_ms: int = 0


class RunSubmitted(Event):
    """The run is submitted as a Temporal workflow: the audit's link to Temporal's history (and back:
    the workflow id is the run id, and the workflow's memo carries it). Each `run.attempt` names the
    workflow execution (its run id) that took it."""

    kind: Literal["run.submitted"] = "run.submitted"
    workflow_id: str
    namespace: str
    address: str
    task_queue: str


class RunAttempt(Event):
    """A fleet worker took the run: attempt 1, or a retry from a clean start after `reason`."""

    kind: Literal["run.attempt"] = "run.attempt"
    attempt: int
    host_id: str
    task_queue: str
    workflow_id: str
    workflow_run_id: str
    previous_host: str = ""
    reason: str = ""


class FleetActivity(Event):
    """A delivery activity (merge, stage, promote) of the run's workflow started; attempt > 1 is a
    retry, which finds the work already done rather than doing it twice."""

    kind: Literal["fleet.activity"] = "fleet.activity"
    activity: str
    attempt: int
    host_id: str
    workflow_id: str
    workflow_run_id: str


# ---- sandbox ---------------------------------------------------------------------------------


class SandboxCreated(Event):
    kind: Literal["sandbox.created"] = "sandbox.created"
    container_id: str
    image: str
    purpose: str = "agent"
    readonly_paths: list[str] = []
    hidden_paths: list[str] = []
    warm: bool = False
    """Claimed from a warm pool (created earlier, its mounts attached for this run) rather than created."""


class SandboxSelfTest(Event):
    kind: Literal["sandbox.selftest"] = "sandbox.selftest"
    passed: bool
    interfaces: list[str] = []
    host_probe: str = ""
    detail: str = ""


class SandboxRemoved(Event):
    kind: Literal["sandbox.removed"] = "sandbox.removed"
    container_id: str
    exit_reason: str = ""


# ---- model exchange --------------------------------------------------------------------------


class ToolUseBlock(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str
    input: dict[str, Any] = {}


class ModelRequest(Event):
    kind: Literal["model.request"] = "model.request"
    request_model: str = Field(alias="gen_ai.request.model")
    operation: str = Field(default="chat", alias="gen_ai.operation.name")
    system: str = Field(default="anthropic", alias="gen_ai.system")
    exchange_id: str
    messages: int = 0
    tools: int = 0
    stream: bool = True
    last_user: str = ""
    """A short summary of the newest user turn: what the agent saw."""
    dropped_betas: list[str] = []
    """`anthropic-beta` values the proxy did not forward (model/request_filter.py)."""


class ModelResponse(Event):
    kind: Literal["model.response"] = "model.response"
    request_model: str = Field(alias="gen_ai.request.model")
    operation: str = Field(default="chat", alias="gen_ai.operation.name")
    """`chat`, or `count_tokens`, whose input_tokens are a count and not usage."""
    response_model: str = Field(default="", alias="gen_ai.response.model")
    response_id: str = Field(default="", alias="gen_ai.response.id")
    exchange_id: str
    stop_reason: str | None = None
    input_tokens: int = Field(default=0, alias="gen_ai.usage.input_tokens")
    output_tokens: int = Field(default=0, alias="gen_ai.usage.output_tokens")
    text: str = ""
    thinking: str = ""
    tool_uses: list[ToolUseBlock] = []
    latency_ms: float = 0.0


class ModelRefused(Event):
    kind: Literal["model.refused"] = "model.refused"
    request_model: str = Field(alias="gen_ai.request.model")
    reason: str


# ---- agent tools (from Claude Code hooks) ----------------------------------------------------


class SandboxReported(Event):
    """An event the host knows only because Claude Code, inside the sandbox, said so (a hook call or
    its message stream): a claim by hostile ground, unlike what the host's own proxy and gateway saw."""

    reported_by: Literal["sandbox"] = "sandbox"


class ToolCall(SandboxReported):
    kind: Literal["tool.call"] = "tool.call"
    actor: Actor = "agent"
    tool_name: str = Field(alias="gen_ai.tool.name")
    tool_call_id: str = Field(alias="gen_ai.tool.call.id")
    input: dict[str, Any] = {}


class ToolResult(SandboxReported):
    kind: Literal["tool.result"] = "tool.result"
    actor: Actor = "agent"
    tool_name: str = Field(alias="gen_ai.tool.name")
    tool_call_id: str = Field(alias="gen_ai.tool.call.id")
    output: str = ""
    is_error: bool = False


class ToolDenied(SandboxReported):
    kind: Literal["tool.denied"] = "tool.denied"
    actor: Actor = "agent"
    tool_name: str = Field(alias="gen_ai.tool.name")
    tool_call_id: str = Field(alias="gen_ai.tool.call.id")
    rule: str
    reason: str


class ShellCommand(SandboxReported):
    kind: Literal["shell.command"] = "shell.command"
    actor: Actor = "agent"
    tool_call_id: str = Field(alias="gen_ai.tool.call.id")
    command: str
    exit_code: int | None = None
    output: str = ""


class FileEdit(SandboxReported):
    kind: Literal["file.edit"] = "file.edit"
    actor: Actor = "agent"
    tool_call_id: str = Field(alias="gen_ai.tool.call.id")
    path: str
    diff: str = ""


class HumanPrompt(SandboxReported):
    """A prompt typed into an interactive session (`corral shell`), as the sandbox's hook reported it;
    `actor` names the human at the terminal."""

    kind: Literal["human.prompt"] = "human.prompt"
    prompt: str
    session_id: str = ""


class AgentStopped(SandboxReported):
    kind: Literal["agent.stopped"] = "agent.stopped"
    actor: Actor = "agent"
    reason: str = ""
    turns: int = 0
    cost_usd: float = 0.0


# ---- gateway, secrets ------------------------------------------------------------------------


class GatewayCall(Event):
    kind: Literal["gateway.call"] = "gateway.call"
    actor: Actor = "agent"
    token_id: str
    tool_name: str = Field(alias="gen_ai.tool.name")
    arguments: dict[str, Any] = {}
    arguments_hash: str = ""
    outcome: str = ""
    access: str = ""
    """The operator's class of the tool ("read"/"write"), "" for a tool the gateway does not know."""
    result_bytes: int = 0
    upstream_ms: float = 0.0


class GatewayDecision(Event):
    kind: Literal["gateway.decision"] = "gateway.decision"
    token_id: str
    tool_name: str = Field(alias="gen_ai.tool.name")
    allowed: bool
    rule: str = ""
    reason: str = ""
    policy_version: str = ""
    arguments_hash: str = ""


class SecretRequested(Event):
    kind: Literal["secret.requested"] = "secret.requested"
    name: str
    provider: str
    requester: str = ""
    """Who takes the value: `gateway`, `checks` or `agent` (logs written before it say `consumer`:
    `parse_event` reads that as `requester`)."""
    purpose: str = ""
    """What for: the upstream it authenticates, or the sandbox env var it becomes."""


# ---- delivery --------------------------------------------------------------------------------


class CheckResult(Event):
    kind: Literal["check.result"] = "check.result"
    command: str
    exit_code: int
    passed: bool
    output: str = ""
    duration_ms: int = 0


class CommitMade(Event):
    kind: Literal["commit.made"] = "commit.made"
    commit: str
    branch: str
    files: list[str] = []
    diff_stat: str = ""
    patch: str = ""
    """The full patch that shipped (the recorder moves a large one into a hashed blob side file)."""


class PrOpened(Event):
    kind: Literal["pr.opened"] = "pr.opened"
    number: int
    url: str = ""
    branch: str = ""


class ApprovalGranted(Event):
    kind: Literal["approval.granted"] = "approval.granted"
    subject: str = "run"
    """`run` (approve and merge) or `promote` (a staged deployment to production)."""
    comment: str = ""
    head_sha: str = ""
    override: bool = False
    """Granted over failed checks by an approver (`corral approve --override`)."""


class ApprovalRejected(Event):
    kind: Literal["approval.rejected"] = "approval.rejected"
    subject: str = "run"
    comment: str = ""


class DeployRequested(Event):
    """The agent asked for a staging deploy; corral stages the committed result after the checks pass."""

    kind: Literal["deploy.requested"] = "deploy.requested"
    target: str
    branch: str = ""


class DeployStaged(Event):
    kind: Literal["deploy.staged"] = "deploy.staged"
    deployment_id: str
    url: str = ""
    ref: str = ""
    """The commit SHA that was staged."""


class DeployPromoted(Event):
    kind: Literal["deploy.promoted"] = "deploy.promoted"
    deployment_id: str
    url: str = ""


class AgentInit(Event):
    """What Claude Code reported at init: its version and tool surface, checked against the pin."""

    kind: Literal["agent.init"] = "agent.init"
    claude_code_version: str = ""
    tools: list[str] = []
    gateway_tools: list[str] = []
    tool_surface_hash: str = ""


# ---- delivery --------------------------------------------------------------------------------


class MergeMade(Event):
    kind: Literal["merge.made"] = "merge.made"
    commit: str
    """The merge commit now at the head of `base_branch`."""
    base_branch: str
    head_sha: str
    previous: str = ""
    """Where `base_branch` pointed before the merge."""


class MergeRefused(Event):
    """A merge that did not happen (a conflict, a moved head, a dirty checkout): nothing moved."""

    kind: Literal["merge.refused"] = "merge.refused"
    reason: str
    conflicts: list[str] = []


class DeployFailed(Event):
    kind: Literal["deploy.failed"] = "deploy.failed"
    deployment_id: str = ""
    reason: str


class DeployRolledBack(Event):
    kind: Literal["deploy.rolled_back"] = "deploy.rolled_back"
    deployment_id: str
    """The deployment production serves again."""
    from_deployment_id: str = ""
    url: str = ""


class ReviewComment(Event):
    """A reviewer's comment on the run's pull request, offered as a candidate preference."""

    kind: Literal["review.comment"] = "review.comment"
    body: str
    source: str = "local"
    preference_id: int | None = None


class PrefsInjected(Event):
    kind: Literal["prefs.injected"] = "prefs.injected"
    preference_ids: list[str] = []


# ---- corral server sign-in -------------------------------------------------------------------
# On the server's own chain (`server-<started>-<hex>`, one per server start), never on a run's.


class AuthSignedIn(Event):
    """A user signed in with a password; the actor is `human:<name>`."""

    kind: Literal["auth.signed_in"] = "auth.signed_in"
    role: str
    client: str = ""


class AuthSignedOut(Event):
    kind: Literal["auth.signed_out"] = "auth.signed_out"
    client: str = ""


class AuthTokenUsed(Event):
    """The first request with a user's current API token in this server process (not every one)."""

    kind: Literal["auth.token_used"] = "auth.token_used"
    role: str
    client: str = ""


class AuthRefused(Event):
    """A refused sign-in or bearer token. `name` is what was typed, and may name no user: the client
    was told only "wrong user name or password". `throttled`: too many failures in a row, refused
    without checking (audited once per lockout, not per attempt)."""

    kind: Literal["auth.refused"] = "auth.refused"
    method: Literal["password", "token"]
    reason: Literal["bad_credentials", "bad_token", "throttled"]
    name: str = ""
    client: str = ""


AnyEvent = Annotated[
    RunCreated
    | RunPhase
    | RunFinished
    | RunSubmitted
    | RunAttempt
    | FleetActivity
    | SandboxCreated
    | SandboxSelfTest
    | SandboxRemoved
    | ModelRequest
    | ModelResponse
    | ModelRefused
    | ToolCall
    | ToolResult
    | ToolDenied
    | ShellCommand
    | FileEdit
    | HumanPrompt
    | AgentStopped
    | GatewayCall
    | GatewayDecision
    | SecretRequested
    | CheckResult
    | CommitMade
    | PrOpened
    | ApprovalGranted
    | ApprovalRejected
    | DeployRequested
    | DeployStaged
    | DeployPromoted
    | MergeMade
    | MergeRefused
    | DeployFailed
    | DeployRolledBack
    | ReviewComment
    | PrefsInjected
    | AgentInit
    | AuthSignedIn
    | AuthSignedOut
    | AuthTokenUsed
    | AuthRefused,
    Field(discriminator="kind"),
]

EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


_RENAMED: dict[str, dict[str, str]] = {"secret.requested": {"consumer": "requester"}}
"""Fields renamed since a log was written, by kind: old name -> new name. A stored line is never
rewritten (its hash covers it), so the old name is read as the new one here, in one place."""
_OLD_KEYS = tuple(f'"{old}"'.encode() for renames in _RENAMED.values() for old in renames)


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    renames = _RENAMED.get(str(data.get("kind", "")))
    if not renames or not any(old in data for old in renames):
        return data
    upgraded = dict(data)
    for old, new in renames.items():
        if old in upgraded:
            value = upgraded.pop(old)
            upgraded.setdefault(new, value)
    return upgraded


def parse_event(data: dict[str, Any] | str | bytes) -> AnyEvent:
    """Rebuild a typed event from its stored JSON form (by alias), reading renamed fields of older
    logs under their current names."""
    if isinstance(data, str | bytes):
        raw = data.encode() if isinstance(data, str) else data
        if not any(old in raw for old in _OLD_KEYS):  # the common case: parse the bytes directly
            return EVENT_ADAPTER.validate_json(raw)
        data = json.loads(raw)
    return EVENT_ADAPTER.validate_python(_upgrade(data) if isinstance(data, dict) else data)


def event_payload(event: Event) -> dict[str, Any]:
    """The JSON-ready form of an event, by alias: what the audit log hashes and stores."""
    return event.model_dump(mode="json", by_alias=True)
