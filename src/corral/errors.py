"""The one exception tree. Every error a user can hit says what was wrong and what to do.

CorralError
├── ConfigError          corral.toml missing, malformed, unknown key, bad value
├── PlaybookError        a playbook that is not YAML or has an unknown tool shape
├── WorkspaceError       not a git repo, unknown base branch, worktree trouble
│   └── LimitError       a run's change is over a [limits] bound: nothing of it is committed
├── SandboxError         Docker Engine missing, image missing, container trouble
│   ├── EgressError      the in-container self-test found a way out: fail closed
│   ├── ImageBuildFailed a project or team image's build step failed; `step`, `exit_code` and
│   │                    `output` say which and why, and nothing was tagged
│   └── ImageRejected    an image failed verification (Claude Code, uid, setuid files, labels);
│                        `problems` lists what is wrong
├── ModelError           the model proxy refused or the upstream failed
├── RunError             an illegal phase transition or a run that cannot proceed
│   ├── RunConflict      another process changed the run's phase first
│   ├── ApprovalRefused  an approval corral will not accept (who, when, what): nothing changed
│   └── PinMismatch      the CLI or tool surface a run found differs from the project's model pin
├── GateRefused          `corral model promote` without a fresh passing regression of that model
├── MergeRefused         a merge that did not happen (conflict, moved head, dirty checkout,
│                        a forge's 405/409/422); `conflicts` lists conflicted paths
├── DeployError          a build or a deploy backend failed (Vercel ERROR or CANCELED, a failed build)
├── TokenRefused         a capability token that is malformed, unknown, revoked, expired, used up,
│                        or for another audience; `reason` names which (one vocabulary for the
│                        gateway's tokens and the state DB's)
├── UpstreamFailure      a gateway upstream timed out, crashed or is unavailable; `kind` says which
├── IncidentSourceError  `corral incident SOURCE` names no Sentry issue or Datadog monitor/incident
├── ServeError           a socket or port to serve on is in use or cannot be bound
├── ShellError           `corral shell` cannot open an interactive session (no terminal, a HOME
│                        the sandbox refused)
├── StoreError           a state or audit store is unreachable or misconfigured
│   └── SpoolCorrupt     a spool line that is not JSON with whole lines after it (not a torn tail)
├── NotFound             a run, event or record that does not exist
│   └── RunNotFound      no such run in the team searched; `team` names it
├── FleetError           Temporal (scale-out) is configured but unreachable, or a worker cannot serve
│   └── SignalRefused    an approve/reject/promote signal for a run with no workflow, or whose
│                        workflow is not waiting for that decision: nothing was recorded
├── AuthError            corral server: no session or token, a wrong password, or a role too low
└── NotAvailable         an action this installation does not have yet (the server answers 501)
"""

from __future__ import annotations

from typing import Any, Literal

TokenProblem = Literal["malformed", "unknown", "expired", "revoked", "wrong_audience", "exhausted"]
UpstreamFailureKind = Literal["timeout", "crash", "unavailable"]


class CorralError(Exception):
    """Base of every error corral raises on purpose. `hint` says what the user can do."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(CorralError):
    pass


class PlaybookError(CorralError):
    pass


class WorkspaceError(CorralError):
    pass


class LimitError(WorkspaceError):
    pass


class SandboxError(CorralError):
    pass


class EgressError(SandboxError):
    pass


class ImageBuildFailed(SandboxError):
    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        step: str = "",
        exit_code: int | None = None,
        output: str = "",
    ) -> None:
        super().__init__(message, hint=hint)
        self.step = step
        self.exit_code = exit_code
        self.output = output


class ImageRejected(SandboxError):
    def __init__(self, message: str, *, hint: str | None = None, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems


class ModelError(CorralError):
    pass


class RunError(CorralError):
    pass


class RunConflict(RunError):
    pass


class PinMismatch(RunError):
    pass


class GateRefused(CorralError):
    pass


class ApprovalRefused(RunError):
    pass


class MergeRefused(CorralError):
    def __init__(self, message: str, *, hint: str | None = None, conflicts: list[str] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.conflicts = list(conflicts or [])


class DeployError(CorralError):
    pass


class TokenRefused(CorralError):
    """`record` is the refused token's record when it is known (so the refusal can be audited on its run)."""

    def __init__(
        self,
        message: str | None = None,
        *,
        reason: TokenProblem,
        hint: str | None = None,
        record: Any = None,
    ) -> None:
        super().__init__(message or f"capability token {reason}", hint=hint)
        self.reason: TokenProblem = reason
        self.record = record


class UpstreamFailure(CorralError):
    def __init__(self, kind: UpstreamFailureKind, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.kind: UpstreamFailureKind = kind


class IncidentSourceError(CorralError):
    pass


class ServeError(CorralError):
    pass


class ShellError(CorralError):
    pass


class StoreError(CorralError):
    pass


class SpoolCorrupt(StoreError):
    pass


class NotFound(CorralError):
    pass


class RunNotFound(NotFound):
    def __init__(self, message: str, *, hint: str | None = None, team: str = "default") -> None:
        super().__init__(message, hint=hint)
        self.team = team


class FleetError(CorralError):
    pass


class SignalRefused(FleetError):
    pass


class AuthError(CorralError):
    """`status` is the HTTP status the server answers with: 401 for who-are-you, 403 for not-allowed."""

    def __init__(self, message: str, *, hint: str | None = None, status: int = 401) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class NotAvailable(CorralError):
    pass
