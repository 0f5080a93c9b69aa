"""`vault:MOUNT/PATH#KEY`: one key of a KV version 2 secret in HashiCorp Vault or OpenBao, via `hvac`.

Authentication comes from corral's environment: `VAULT_ADDR` (or `BAO_ADDR`), then `VAULT_TOKEN` (or
`BAO_TOKEN`), else AppRole with `VAULT_ROLE_ID` and `VAULT_SECRET_ID` (mount `VAULT_APPROLE_MOUNT`,
default `approle`); `VAULT_NAMESPACE` when set. The token obtained from AppRole lives in this object
only for the one read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from corral.errors import ConfigError

VAULT_TIMEOUT_SECONDS = 10


def parse_target(name: str, target: str) -> tuple[str, str, str]:
    """(mount, path, key) of `MOUNT/PATH#KEY`."""
    where, sep, key = target.partition("#")
    mount, slash, path = where.strip("/").partition("/")
    if not sep or not key or not slash or not mount or not path:
        raise ConfigError(
            f"secret {name!r}: vault reference {target!r} is not MOUNT/PATH#KEY",
            hint="e.g. vault:secret/shop/db#url (KV v2 mount 'secret', path 'shop/db', key 'url')",
        )
    return mount, path, key


class VaultProvider:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def _env(self, *names: str) -> str:
        for n in names:
            if self._environ.get(n):
                return self._environ[n]
        return ""

    def _client(self, name: str) -> Any:
        import hvac
        import requests

        addr = self._env("VAULT_ADDR", "BAO_ADDR")
        if not addr:
            raise ConfigError(
                f"secret {name!r}: VAULT_ADDR is not set",
                hint="export VAULT_ADDR=https://vault.example:8200 (or BAO_ADDR for OpenBao)",
            )
        namespace = self._env("VAULT_NAMESPACE", "BAO_NAMESPACE") or None
        token = self._env("VAULT_TOKEN", "BAO_TOKEN")
        client = hvac.Client(
            url=addr, token=token or None, namespace=namespace, timeout=VAULT_TIMEOUT_SECONDS
        )
        if token:
            return client
        role_id, secret_id = self._env("VAULT_ROLE_ID"), self._env("VAULT_SECRET_ID")
        if not (role_id and secret_id):
            raise ConfigError(
                f"secret {name!r}: no Vault credentials in the environment",
                hint="export VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID for AppRole",
            )
        try:
            client.auth.approle.login(
                role_id=role_id,
                secret_id=secret_id,
                mount_point=self._env("VAULT_APPROLE_MOUNT") or "approle",
            )
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise ConfigError(
                f"secret {name!r}: AppRole login at {addr} failed: {type(exc).__name__}",
                hint="check VAULT_ROLE_ID / VAULT_SECRET_ID and the AppRole mount",
            ) from exc
        return client

    def fetch(self, name: str, target: str) -> str:
        import hvac
        import requests

        mount, path, key = parse_target(name, target)
        client = self._client(name)
        try:
            # A deleted latest version must fail the resolution, not yield an empty secret.
            response = client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=mount, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath as exc:
            raise ConfigError(
                f"secret {name!r}: no KV v2 secret at {mount}/{path} (or its latest version is deleted)",
                hint=f"check the path, e.g. `bao kv get -mount={mount} {path}`",
            ) from exc
        except hvac.exceptions.Forbidden as exc:
            raise ConfigError(
                f"secret {name!r}: the Vault token may not read {mount}/{path}",
                hint="grant the token's policy 'read' on that path",
            ) from exc
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise ConfigError(
                f"secret {name!r}: reading {mount}/{path} from Vault failed: {type(exc).__name__}",
                hint="check VAULT_ADDR, that the server is unsealed, and that the mount is KV v2",
            ) from exc
        finally:
            client.adapter.close()
        data = (response.get("data") or {}).get("data") or {}
        value = data.get(key)
        if not isinstance(value, str) or not value:
            raise ConfigError(
                f"secret {name!r}: {mount}/{path} has no string key {key!r}",
                hint=f"its keys are: {', '.join(sorted(data)) or '(none)'}",
            )
        return value
