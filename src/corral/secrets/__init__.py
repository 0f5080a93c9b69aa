"""Secrets: resolve the `[secrets]` references of corral.toml through the providers in `providers.py`.

Values are never stored by corral: a resolver keeps what it resolved in memory for the run's life
only. Resolving one emits `SecretRequested` (name, provider, requester, purpose, never the value) to
the run's sink and registers the value with the sink, so the audit log redacts it from then on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from corral.audit import EventSink
from corral.errors import ConfigError
from corral.events import SecretRequested
from corral.secrets.providers import REFERENCE_HINT, open_provider, provider_of, split_reference

if TYPE_CHECKING:
    from corral.config import Config

__all__ = ["SecretResolver", "provider_of", "resolve_reference", "sandbox_env", "split_reference"]


def resolve_reference(name: str, ref: str, environ: Mapping[str, str] | None = None) -> str:
    """The value behind one reference. Errors name the secret and what to set."""
    provider, target = split_reference(ref)
    return open_provider(provider, os.environ if environ is None else environ).fetch(name, target)


class SecretResolver:
    """Resolves named secrets for one consumer set, auditing each request and registering redaction."""

    def __init__(
        self,
        refs: Mapping[str, str],
        sink: EventSink | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._refs = dict(refs)
        self._sink = sink
        self._environ = environ
        self._values: dict[str, str] = {}

    @property
    def names(self) -> list[str]:
        return sorted(self._refs)

    def _ref(self, name: str) -> str:
        ref = self._refs.get(name)
        if ref is None:
            raise ConfigError(
                f"secret {name!r} is not declared for this use",
                hint=f"declare it under [secrets] ({REFERENCE_HINT}) with the destination in its 'to' list",
            )
        return ref

    def _fetch(self, name: str) -> tuple[str, str]:
        ref = self._ref(name)
        value = self._values.get(name)
        if value is None:
            value = resolve_reference(name, ref, self._environ)
            self._values[name] = value
            if self._sink is not None:
                self._sink.register_secret(name, value)
        return ref, value

    def check(self, name: str) -> None:
        """Raise ConfigError unless `name` resolves. The value is kept (and redacted) for `get`, so a
        vault is asked once; `secret.requested` is emitted only when a consumer takes it."""
        self._fetch(name)

    def get(self, name: str, requester: str = "", purpose: str = "") -> str:
        ref, value = self._fetch(name)
        if self._sink is not None:
            self._sink.emit(
                SecretRequested(name=name, provider=provider_of(ref), requester=requester, purpose=purpose)
            )
        return value

    def resolved(self) -> dict[str, str]:
        """Every value resolved so far, by name: what a redactor must scrub."""
        return dict(self._values)


def sandbox_env(
    config: Config,
    sandbox: Literal["checks", "agent"],
    sink: EventSink | None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """ENV_NAME -> value of every secret declared for `sandbox`: `to = ["checks"]` for the checks
    sandbox, `expose = "agent"` for the agent's. Each is resolved now, audited and redacted."""
    declared = {
        name: decl
        for name, decl in config.secrets.items()
        if (decl.expose == "agent" if sandbox == "agent" else "checks" in decl.to)
    }
    resolver = SecretResolver({name: decl.ref for name, decl in declared.items()}, sink, environ)
    return {
        (decl.env or name): resolver.get(name, requester=sandbox, purpose=f"env {decl.env or name}")
        for name, decl in declared.items()
    }
