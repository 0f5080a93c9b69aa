"""corral.toml: the project config. Unknown keys are errors, and every error names the key and the file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from corral.errors import ConfigError
from corral.model import budget
from corral.paths import pattern_problem

CONFIG_FILE = "corral.toml"
DATED_MODEL_ID = re.compile(r"^claude-[a-z0-9.-]+-\d{8}$")
DEFAULT_CLAUDE_CODE = "2.1.332"
DEFAULT_IMAGE = "corral/agent:default"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectConfig(_Section):
    name: str = "project"
    base_branch: str = "main"
    team: str = "default"


def _require_dated(value: str) -> str:
    if not DATED_MODEL_ID.match(value):
        raise ValueError(
            f"{value!r} is not an exact dated model id (like 'claude-sonnet-4-5-20250929'); "
            "aliases are refused because they move under you"
        )
    return value


class AgentConfig(_Section):
    model: str = "claude-sonnet-4-5-20250929"
    small_model: str = "claude-haiku-4-5-20251001"
    claude_code: str = DEFAULT_CLAUDE_CODE
    max_turns: Annotated[int, Field(ge=1, le=1000)] = 60
    timeout_seconds: Annotated[float, Field(gt=0)] = 1800.0
    # The run's model budget, enforced at the proxy (corral/model/budget.py).
    max_model_requests: Annotated[int, Field(ge=1)] = budget.DEFAULT_MAX_MODEL_REQUESTS
    max_tokens: Annotated[int, Field(ge=1)] = budget.DEFAULT_MAX_TOKENS
    max_cost_usd: Annotated[float, Field(gt=0)] = budget.DEFAULT_MAX_COST_USD
    max_concurrent_requests: Annotated[int, Field(ge=1, le=64)] = budget.DEFAULT_MAX_CONCURRENT_REQUESTS

    _dated = field_validator("model", "small_model")(_require_dated)


class SandboxConfig(_Section):
    image: str = DEFAULT_IMAGE
    readonly_paths: list[str] = []
    hidden_paths: list[str] = []
    cpus: Annotated[float, Field(gt=0)] = 2.0
    memory: str = "4g"
    pids: Annotated[int, Field(ge=16)] = 512
    workdir: str = "/workspace"
    agent_may_edit_config: bool = False
    """When false, corral.toml and the gateway file are read-only to the agent like readonly_paths."""

    @field_validator("memory")
    @classmethod
    def _memory_size(cls, value: str) -> str:
        if not re.fullmatch(r"\d+[bkmg]?", value.lower()):
            raise ValueError(f"{value!r} is not a size like '512m' or '4g'")
        return value.lower()

    @field_validator("readonly_paths", "hidden_paths")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            problem = pattern_problem(pattern)
            if problem is not None:
                raise ValueError(f"pattern {pattern!r} {problem} (patterns read as in .gitignore)")
        return patterns


class ChecksConfig(_Section):
    command: str = "pytest -q"
    timeout_seconds: Annotated[float, Field(gt=0)] = 600.0


class GatewayConfig(_Section):
    grants: list[str] = ["forge.open_pull_request", "forge.comment", "forge.list_checks", "deploy.stage"]
    upstreams_file: str = "corral-gateway.toml"
    """The team gateway file (upstream MCP servers, annotations, rate limits), relative to the repo."""
    token_ttl_seconds: Annotated[float, Field(gt=0)] = 3600.0


class LimitsConfig(_Section):
    """Bounds on what a run may hand back (DESIGN invariant 9), checked before anything is committed."""

    max_file_mb: Annotated[float, Field(gt=0)] = 10.0
    max_diff_mb: Annotated[float, Field(gt=0)] = 100.0
    max_files: Annotated[int, Field(ge=1)] = 5000


class ApprovalConfig(_Section):
    approvers: list[str] = []


SecretDestination = Literal["gateway", "checks"]


class SecretConfig(_Section):
    """One `[secrets]` entry: where the value comes from and where it may go.

    `NAME = "env:VAR"` is short for `ref = "env:VAR"`, `to = ["gateway"]`. A value reaches the agent's
    sandbox only with `expose = "agent"`, which the run reports loudly and audits.
    """

    ref: str
    to: list[SecretDestination] = ["gateway"]
    expose: Literal["", "agent"] = ""
    env: str = ""
    """The env var name in the checks (or agent) sandbox; the secret's own name when empty."""

    @field_validator("ref")
    @classmethod
    def _known_provider(cls, ref: str) -> str:
        from corral.secrets.providers import split_reference

        try:
            split_reference(ref)
        except ConfigError as exc:
            raise ValueError(f"{exc} ({exc.hint})") from None
        return ref

    @field_validator("env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value


class StoresConfig(_Section):
    state_url: str | None = None
    audit_url: str | None = None


class Config(_Section):
    project: ProjectConfig = ProjectConfig()
    agent: AgentConfig = AgentConfig()
    sandbox: SandboxConfig = SandboxConfig()
    checks: ChecksConfig = ChecksConfig()
    secrets: dict[str, SecretConfig] = {}
    gateway: GatewayConfig = GatewayConfig()
    approval: ApprovalConfig = ApprovalConfig()
    limits: LimitsConfig = LimitsConfig()
    stores: StoresConfig = StoresConfig()

    @field_validator("secrets", mode="before")
    @classmethod
    def _short_form(cls, refs: Any) -> Any:
        if isinstance(refs, dict):
            return {name: {"ref": v} if isinstance(v, str) else v for name, v in refs.items()}
        return refs

    def secret_refs(self, destination: SecretDestination) -> dict[str, str]:
        """NAME -> reference of every secret that may go to `destination`."""
        return {name: s.ref for name, s in self.secrets.items() if destination in s.to}

    def agent_secrets(self) -> dict[str, str]:
        """NAME -> reference of every secret declared `expose = "agent"`."""
        return {name: s.ref for name, s in self.secrets.items() if s.expose == "agent"}


def _key_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_config(text: str, source: str) -> Config:
    """Parse corral.toml text; `source` names the file in every error."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{source}: not valid TOML: {exc}", hint="fix the syntax, or run `corral init` for a fresh file"
        ) from exc
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = _key_path(error["loc"])
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown key '{key}'")
            else:
                problems.append(f"key '{key}': {error['msg']}")
        raise ConfigError(
            f"{source}: " + "; ".join(problems),
            hint="see the commented file `corral init` writes for every key and its meaning",
        ) from exc


def load_config(repo: Path, explicit: Path | None = None) -> Config:
    """Load `explicit`, or `<repo>/corral.toml`, or the defaults when the repo has none."""
    path = explicit or repo / CONFIG_FILE
    if explicit is not None and not path.is_file():
        raise ConfigError(f"{path}: no such config file", hint="pass an existing file, or run `corral init`")
    if not path.is_file():
        return Config()
    return parse_config(path.read_text(encoding="utf-8"), str(path))


INIT_TEMPLATE = """\
# corral.toml: how corral runs Claude Code on this repository.
# Unknown keys are errors. Every value shown is the default.

[project]
name = "{name}"
base_branch = "{base_branch}"     # runs start from this branch's head commit
team = "default"                  # scopes state rows (row-level security on Postgres)

[agent]
model = "claude-sonnet-4-5-20250929"        # exact dated id; aliases are refused
small_model = "claude-haiku-4-5-20251001"   # used by Claude Code for side requests
claude_code = "{claude_code}"               # pinned Claude Code CLI version
max_turns = 60
timeout_seconds = 1800                      # wall-clock limit; the container is stopped after it
# The model budget, enforced at the proxy; past it the run fails with "budget exhausted: ...".
max_model_requests = 400
max_tokens = 20000000                       # input plus output tokens
max_cost_usd = 50.0                         # estimated from usage at list prices
max_concurrent_requests = 8

[sandbox]
image = "corral/agent:default"    # your team's image, built FROM corral/agent:default
# Path patterns read as in .gitignore: no slash matches at any depth ("*.pem"), a slash anchors at
# the repository root ("config/secret.env", "/.env"), "*" stays within one directory, "**" crosses.
readonly_paths = []               # e.g. ["billing/**", "migrations/prod/**"]: mounted read-only
hidden_paths = []                 # e.g. ["secrets/**", ".env"]: masked, the agent cannot read them
agent_may_edit_config = false     # true lets the agent change corral.toml and the gateway file
cpus = 2
memory = "4g"
pids = 512

[checks]
command = "pytest -q"             # run in a fresh sandbox on the agent's result
timeout_seconds = 600

[secrets]                         # values are resolved when needed and never stored
# SHOP_TOKEN = "env:SHOP_TOKEN"   # or file:/path, cmd:COMMAND, vault:MOUNT/PATH#KEY, vercel:PROJECT/KEY;
#                                 # this short form goes to gateway upstreams only
# [secrets.DATABASE_URL]
# ref = "vault:secret/shop/db#url"
# to = ["checks"]                 # "gateway" (upstream env or header) and/or "checks" (checks sandbox env)
# expose = "agent"                # only if the agent itself must have it: reported loudly, audited

[gateway]
grants = ["forge.open_pull_request", "forge.comment", "forge.list_checks", "deploy.stage"]
upstreams_file = "corral-gateway.toml"  # upstream MCP servers (GitHub, Sentry, ...), if the file exists
token_ttl_seconds = 3600                # the run's capability token expires after this

[limits]                          # a run over a limit fails, and nothing of it is committed
max_file_mb = 10                  # the largest file a run may add or change
max_diff_mb = 100                 # the total size of the files a run adds or changes
max_files = 5000                  # how many files a run may add, change or delete

[approval]
approvers = []                    # who may approve; empty means anyone

[stores]
# state_url = "postgresql+psycopg://user@host/corral"   # default: SQLite under .corral/
# audit_url = "mongodb://host:27017/corral"             # default: SQLite under .corral/
"""


def init_text(name: str, base_branch: str = "main") -> str:
    return INIT_TEMPLATE.format(name=name, base_branch=base_branch, claude_code=DEFAULT_CLAUDE_CODE)
