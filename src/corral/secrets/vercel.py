"""`vercel:PROJECT/KEY`: a Vercel project environment variable, through the REST API.

`GET /v10/projects/{project}/env` lists the project's variables (id, key, type, target); the one with
the key (and, when several, the target `VERCEL_TARGET`, default `production`) is then decrypted with
`GET /v1/projects/{project}/env/{id}`. Variables of type `secret` or `sensitive` cannot be read back
by design, and get an error saying so. Auth: `VERCEL_TOKEN`; `VERCEL_TEAM_ID` for a team's project;
`VERCEL_API_URL` overrides `https://api.vercel.com`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from corral.errors import ConfigError

VERCEL_API = "https://api.vercel.com"
VERCEL_TIMEOUT_SECONDS = 10.0
_UNREADABLE = ("secret", "sensitive")


class VercelProvider:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def fetch(self, name: str, target: str) -> str:
        project, slash, key = target.partition("/")
        if not slash or not project or not key:
            raise ConfigError(
                f"secret {name!r}: vercel reference {target!r} is not PROJECT/KEY",
                hint="e.g. vercel:prj_123abc/DATABASE_URL (project id or name, then the variable)",
            )
        token = self._environ.get("VERCEL_TOKEN", "")
        if not token:
            raise ConfigError(f"secret {name!r}: VERCEL_TOKEN is not set", hint="export VERCEL_TOKEN=...")
        params = {"teamId": self._environ["VERCEL_TEAM_ID"]} if self._environ.get("VERCEL_TEAM_ID") else {}
        base = self._environ.get("VERCEL_API_URL") or VERCEL_API
        with httpx.Client(
            base_url=base,
            headers={"Authorization": f"Bearer {token}"},
            params=params,
            timeout=VERCEL_TIMEOUT_SECONDS,
        ) as client:
            listing = self._get(client, name, f"/v10/projects/{quote(project, safe='')}/env")
            entry = self._pick(name, project, key, listing.get("envs") or [])
            kind = entry.get("type", "")
            if kind in _UNREADABLE:
                raise ConfigError(
                    f"secret {name!r}: Vercel variable {key!r} of {project} is of type {kind!r}, "
                    "whose value the API never returns",
                    hint="re-create it as an 'encrypted' variable, or give corral the value another way",
                )
            env_id = quote(str(entry.get("id", "")), safe="")
            detail = self._get(client, name, f"/v1/projects/{quote(project, safe='')}/env/{env_id}")
        value = detail.get("value")
        if not isinstance(value, str) or not value:
            raise ConfigError(
                f"secret {name!r}: Vercel returned no value for {key!r} of {project}",
                hint="check that the token may decrypt the project's variables",
            )
        return value

    def _pick(self, name: str, project: str, key: str, envs: list[Any]) -> dict[str, Any]:
        matches = [e for e in envs if isinstance(e, dict) and e.get("key") == key]
        if not matches:
            raise ConfigError(
                f"secret {name!r}: project {project} has no environment variable {key!r}",
                hint="add it in the project's settings, or fix the reference",
            )
        wanted = self._environ.get("VERCEL_TARGET") or "production"
        targeted = [e for e in matches if wanted in _targets(e)]
        return targeted[0] if targeted else matches[0]

    @staticmethod
    def _get(client: httpx.Client, name: str, path: str) -> dict[str, Any]:
        try:
            response = client.get(path)
        except httpx.HTTPError as exc:
            raise ConfigError(
                f"secret {name!r}: Vercel API unreachable: {type(exc).__name__}",
                hint="check the network, or VERCEL_API_URL",
            ) from exc
        if response.status_code in (401, 403):
            raise ConfigError(
                f"secret {name!r}: Vercel refused the token ({response.status_code})",
                hint="check VERCEL_TOKEN and, for a team's project, VERCEL_TEAM_ID",
            )
        if response.status_code == 404:
            raise ConfigError(f"secret {name!r}: Vercel has no {path}", hint="check the project id or name")
        if response.status_code != 200:
            raise ConfigError(
                f"secret {name!r}: Vercel answered {response.status_code} for {path}", hint="retry later"
            )
        body = response.json()
        return body if isinstance(body, dict) else {}


def _targets(entry: dict[str, Any]) -> list[str]:
    target = entry.get("target")
    if isinstance(target, str):
        return [target]
    return [t for t in target or [] if isinstance(t, str)]
