"""The secret provider contract, and a registry that picks a provider by reference prefix, lazily.

| reference              | provider                                   | module                 |
|------------------------|--------------------------------------------|------------------------|
| `env:VAR`              | an environment variable of corral          | `secrets/local.py`     |
| `file:/PATH`           | a file's contents (trailing newline cut)   | `secrets/local.py`     |
| `cmd:COMMAND`          | a command's stdout (a password manager)    | `secrets/command.py`   |
| `vault:MOUNT/PATH#KEY` | HashiCorp Vault / OpenBao KV v2 via `hvac` | `secrets/vault.py`     |
| `vercel:PROJECT/KEY`   | a Vercel project environment variable      | `secrets/vercel.py`    |

A provider is built per resolution from the environment corral runs in (its credentials: a Vault
token, a Vercel token) and returns the value; it keeps nothing. Clients such as `hvac` are imported
only when a reference needs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Protocol

from corral.errors import ConfigError

_PROVIDERS: dict[str, str] = {
    "env": "corral.secrets.local:EnvProvider",
    "file": "corral.secrets.local:FileProvider",
    "cmd": "corral.secrets.command:CommandProvider",
    "vault": "corral.secrets.vault:VaultProvider",
    "vercel": "corral.secrets.vercel:VercelProvider",
}

REFERENCE_HINT = "use 'env:VAR', 'file:/path', 'cmd:COMMAND', 'vault:MOUNT/PATH#KEY' or 'vercel:PROJECT/KEY'"


class SecretProvider(Protocol):
    """Raises `ConfigError` naming the secret and what to fix when the value cannot be had."""

    def fetch(self, name: str, target: str) -> str:
        """The value behind `target` (the reference after its prefix) for the secret `name`."""
        ...


def split_reference(ref: str) -> tuple[str, str]:
    """(provider, target) of a reference like `vault:secret/shop#token`; ConfigError if malformed."""
    provider, sep, target = ref.partition(":")
    if not sep or provider not in _PROVIDERS or not target.strip():
        raise ConfigError(f"secret reference {ref!r} names no known provider", hint=REFERENCE_HINT)
    return provider, target


def provider_of(ref: str) -> str:
    """`env`, `file`, `cmd`, `vault` or `vercel`: the provider part of a reference."""
    return split_reference(ref)[0]


def open_provider(provider: str, environ: Mapping[str, str]) -> SecretProvider:
    module_name, _, class_name = _PROVIDERS[provider].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    instance: SecretProvider = cls(environ)
    return instance
