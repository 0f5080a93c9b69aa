"""The one exception tree. Every error a user can hit says what was wrong and what to do.

CorralError
├── ConfigError          corral.toml missing, malformed, unknown key, bad value
├── PlaybookError        a playbook that is not YAML or has an unknown tool shape
├── WorkspaceError       not a git repo, unknown base branch, worktree trouble
├── SandboxError         Docker Engine missing, image missing, container trouble
│   └── EgressError      the in-container self-test found a way out: fail closed
├── ModelError           the model proxy refused or the upstream failed
├── ServeError           a socket path or TCP port cannot be served on: in use, or not bindable
├── RunError             an illegal phase transition or a run that cannot proceed
│   └── RunConflict      another process changed the run's phase first
├── StoreError           a state or audit store is unreachable or misconfigured
└── NotFound             a run, event or record that does not exist
"""

from __future__ import annotations


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


class SandboxError(CorralError):
    pass


class EgressError(SandboxError):
    pass


class ModelError(CorralError):
    pass


class ServeError(CorralError):
    pass


class RunError(CorralError):
    pass


class RunConflict(RunError):
    pass


class StoreError(CorralError):
    pass


class NotFound(CorralError):
    pass
