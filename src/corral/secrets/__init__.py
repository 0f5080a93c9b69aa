"""Secrets providers: resolve the `[secrets]` references of corral.toml (`env:VAR`, `file:/path`).

Values are never stored by corral. Resolving one emits `SecretRequested` (the name and the provider,
never the value) to the run's sink and registers the value with the sink, so the audit log redacts it
from then on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from corral.audit import EventSink
from corral.errors import ConfigError
from corral.events import SecretRequested


def provider_of(ref: str) -> str:
    """`env` or `file`: the provider part of a reference like `env:SHOP_TOKEN`."""
    provider, sep, _ = ref.partition(":")
    if not sep or provider not in ("env", "file"):
        raise ConfigError(
            f"secret reference {ref!r} names no known provider",
            hint="use 'env:VAR' (an environment variable) or 'file:/path' (a file's contents)",
        )
    return provider


def resolve_reference(name: str, ref: str, environ: Mapping[str, str] | None = None) -> str:
    """The value behind one reference. Errors name the secret and what to set."""
    provider = provider_of(ref)
    target = ref.split(":", 1)[1]
    if provider == "env":
        env = os.environ if environ is None else environ
        value = env.get(target)
        if value is None or value == "":
            raise ConfigError(
                f"secret {name!r}: environment variable {target!r} is not set",
                hint=f"export {target}=... in the environment corral runs in",
            )
        return value
    path = Path(target)
    try:
        # A trailing newline is an artefact of `echo > file`, never part of a credential.
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(
            f"secret {name!r}: cannot read {path}: {exc.strerror}",
            hint="create the file, readable by the user corral runs as",
        ) from exc


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

    def _resolve(self, name: str) -> tuple[str, str]:
        ref = self._refs.get(name)
        if ref is None:
            raise ConfigError(
                f"secret {name!r} is not declared",
                hint=f'add {name} = "env:VAR" or "file:/path" under [secrets]',
            )
        return ref, resolve_reference(name, ref, self._environ)

    def check(self, name: str) -> None:
        """Raise ConfigError unless `name` resolves; nothing is emitted, nothing kept."""
        self._resolve(name)

    def get(self, name: str, consumer: str = "") -> str:
        ref, value = self._resolve(name)
        self._values[name] = value
        if self._sink is not None:
            self._sink.register_secret(name, value)
            self._sink.emit(SecretRequested(name=name, provider=provider_of(ref), consumer=consumer))
        return value

    def resolved(self) -> dict[str, str]:
        """Every value resolved so far, by name: what a redactor must scrub."""
        return dict(self._values)
