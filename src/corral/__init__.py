"""corral: Claude Code on real repositories, one locked-down container per run.

The public API is `__all__`: the run lifecycle, the services that wire it, the stores, the typed
events and the exception tree. Each name is imported on first use, so importing the package has no
side effects: no output, no directories, no network, and none of the heavy libraries behind it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # configuration and wiring
    "Config": "corral.config",
    "load_config": "corral.config",
    "Settings": "corral.settings",
    "load_settings": "corral.settings",
    "Scope": "corral.scope",
    "resolve_scope": "corral.scope",
    "Services": "corral.services",
    # the run lifecycle
    "RunOrchestrator": "corral.runs",
    "RunRequest": "corral.runs",
    "ShellOrchestrator": "corral.shell.session",
    "ShellRequest": "corral.shell.session",
    "Phase": "corral.state.machine",
    "Playbook": "corral.model.playbook",
    # stores
    "AuditLog": "corral.audit.log",
    "EventSink": "corral.audit",
    "StateStore": "corral.state.db",
    "RunRecord": "corral.state.models",
    # events
    "Event": "corral.events",
    "AnyEvent": "corral.events",
    "parse_event": "corral.events",
    # errors
    "CorralError": "corral.errors",
    "ConfigError": "corral.errors",
    "PlaybookError": "corral.errors",
    "WorkspaceError": "corral.errors",
    "SandboxError": "corral.errors",
    "EgressError": "corral.errors",
    "ModelError": "corral.errors",
    "RunError": "corral.errors",
    "RunConflict": "corral.errors",
    "TokenRefused": "corral.errors",
    "UpstreamFailure": "corral.errors",
    "ServeError": "corral.errors",
    "ShellError": "corral.errors",
    "StoreError": "corral.errors",
    "SpoolCorrupt": "corral.errors",
    "NotFound": "corral.errors",
    "RunNotFound": "corral.errors",
}

__all__ = [
    "AnyEvent",
    "AuditLog",
    "Config",
    "ConfigError",
    "CorralError",
    "EgressError",
    "Event",
    "EventSink",
    "ModelError",
    "NotFound",
    "Phase",
    "Playbook",
    "PlaybookError",
    "RunConflict",
    "RunError",
    "RunNotFound",
    "RunOrchestrator",
    "RunRecord",
    "RunRequest",
    "SandboxError",
    "Scope",
    "ServeError",
    "Services",
    "Settings",
    "ShellError",
    "ShellOrchestrator",
    "ShellRequest",
    "SpoolCorrupt",
    "StateStore",
    "StoreError",
    "TokenRefused",
    "UpstreamFailure",
    "WorkspaceError",
    "__version__",
    "load_config",
    "load_settings",
    "parse_event",
    "resolve_scope",
]

if TYPE_CHECKING:
    from corral.audit import EventSink
    from corral.audit.log import AuditLog
    from corral.config import Config, load_config
    from corral.errors import (
        ConfigError,
        CorralError,
        EgressError,
        ModelError,
        NotFound,
        PlaybookError,
        RunConflict,
        RunError,
        RunNotFound,
        SandboxError,
        ServeError,
        ShellError,
        SpoolCorrupt,
        StoreError,
        TokenRefused,
        UpstreamFailure,
        WorkspaceError,
    )
    from corral.events import AnyEvent, Event, parse_event
    from corral.model.playbook import Playbook
    from corral.runs import RunOrchestrator, RunRequest
    from corral.scope import Scope, resolve_scope
    from corral.services import Services
    from corral.settings import Settings, load_settings
    from corral.shell.session import ShellOrchestrator, ShellRequest
    from corral.state.db import StateStore
    from corral.state.machine import Phase
    from corral.state.models import RunRecord


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'corral' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
