"""The gateway's own config: upstream MCP servers, the operator's read/write annotation table, rate limits.

It lives in a team gateway file (TOML) beside corral.toml, whose `[gateway] grants` say what a run's
token may call. Credentials are never written here: env and header values may hold `${secret:NAME}`,
resolved from the secrets providers when the upstream starts.

    [upstreams.everything]
    command = "node"
    args = ["/opt/mcp/server-everything/dist/index.js", "stdio"]
    env = { API_KEY = "${secret:EVERYTHING_KEY}" }
    timeout_seconds = 30

    [upstreams.sentry]
    url = "https://mcp.sentry.example/mcp"
    headers = { Authorization = "Bearer ${secret:SENTRY_TOKEN}" }

    [annotations]               # operator-owned; upstream readOnlyHint is never trusted
    "sentry.list_issues" = "read"

    [rate_limits]
    per_token = { rate = 20.0, burst = 40 }
    per_tool."forge.comment" = { rate = 0.5, burst = 3 }

    [secrets]                   # extra references, merged with corral.toml's [secrets]
    SENTRY_TOKEN = "env:SENTRY_TOKEN"
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from corral.errors import ConfigError
from corral.gateway.ratelimit import RateLimitConfig
from corral.secrets.providers import split_reference

UPSTREAM_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
SECRET_REF = re.compile(r"\$\{secret:([A-Za-z_][A-Za-z0-9_]*)\}")
BUILTIN_UPSTREAMS = ("forge", "deploy")
Access = Literal["read", "write"]


class UpstreamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    command: str | None = None
    args: list[str] = []
    env: dict[str, str] = {}
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = {}
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    start_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0

    @model_validator(mode="after")
    def _one_transport(self) -> UpstreamConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError(
                "set exactly one of 'command' (a stdio server) or 'url' (a streamable HTTP server)"
            )
        if self.url is None and self.headers:
            raise ValueError("'headers' apply to url upstreams; a stdio upstream takes 'env'")
        if self.command is None and (self.env or self.args):
            raise ValueError("'env' and 'args' apply to command upstreams; a url upstream takes 'headers'")
        return self

    def secret_names(self) -> list[str]:
        values = [*self.env.values(), *self.headers.values()]
        return sorted({name for value in values for name in SECRET_REF.findall(value)})


class GatewayFileConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    upstreams: dict[str, UpstreamConfig] = {}
    annotations: dict[str, Access] = {}
    rate_limits: RateLimitConfig = RateLimitConfig()
    secrets: dict[str, str] = {}

    @model_validator(mode="after")
    def _names(self) -> GatewayFileConfig:
        for name in self.upstreams:
            if not UPSTREAM_NAME.match(name):
                raise ValueError(f"upstream name {name!r} must be lowercase letters, digits and '-'")
            if name in BUILTIN_UPSTREAMS:
                raise ValueError(f"upstream name {name!r} is reserved for the built-in tools")
        for ref in self.secrets.values():
            try:
                split_reference(ref)
            except ConfigError as exc:
                raise ValueError(f"{exc} ({exc.hint})") from None
        return self


def parse_gateway_file(text: str, source: str) -> GatewayFileConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}", hint="fix the syntax") from exc
    try:
        return GatewayFileConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(p) for p in error["loc"]) or "(top level)"
            problems.append(
                f"unknown key '{key}'" if error["type"] == "extra_forbidden" else f"{key}: {error['msg']}"
            )
        raise ConfigError(
            f"{source}: " + "; ".join(problems), hint="see docs/gateway.md for the file format"
        ) from exc


def load_gateway_file(path: Path) -> GatewayFileConfig:
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such gateway file", hint="pass an existing file, or omit it for built-ins only"
        )
    return parse_gateway_file(path.read_text(encoding="utf-8"), str(path))
