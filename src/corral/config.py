"""corral.toml: the project config. Unknown keys are errors, and every error names the key and the file."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from corral.errors import ConfigError
from corral.model import budget, upstream_failures
from corral.paths import pattern_problem

CONFIG_FILE = "corral.toml"
DATED_MODEL_ID = re.compile(r"^claude-[a-z0-9.-]+-\d{8}$")
DEFAULT_CLAUDE_CODE = "2.1.332"
DEFAULT_IMAGE = "corral/agent:default"
SandboxRuntime = Literal["runc", "runsc"]
"""The OCI runtime of every sandbox: runc shares the host kernel, runsc (gVisor) puts its own between."""


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
    # A failing model upstream (corral/model/upstream_failures.py): Claude Code's retries per request
    # (it clamps them to 15), and the longest silence of a streamed answer before the proxy cuts it.
    model_retries: Annotated[int, Field(ge=0, le=15)] = upstream_failures.DEFAULT_MODEL_RETRIES
    model_stream_idle_seconds: Annotated[float, Field(gt=0)] = upstream_failures.DEFAULT_STREAM_IDLE_SECONDS

    _dated = field_validator("model", "small_model")(_require_dated)


_APT_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$")


class ImageConfig(_Section):
    """`[sandbox.image]` (or `[team.image]`): an image built FROM corral/agent with the project's deps.

    The same key `image` also takes a string naming a ready image, so corral.toml files written before
    project images existed keep working: TOML cannot hold both, and one key keeps one meaning.
    """

    apt: list[str] = []
    """Debian packages, installed as root in their own layer before any repository file is copied in."""
    setup: list[str] = []
    """Shell steps run at build time, with network, as uid 1000, in /opt/corral/deps."""
    inputs: list[str] = []
    """Repository files (or glob patterns) copied in before `setup`; their content decides rebuilds."""

    @field_validator("apt")
    @classmethod
    def _apt_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _APT_NAME.match(name):
                raise ValueError(f"{name!r} is not a Debian package name (like 'nodejs' or 'tzdata=2024a-0')")
        return names

    @field_validator("setup")
    @classmethod
    def _steps(cls, steps: list[str]) -> list[str]:
        for step in steps:
            if not step.strip():
                raise ValueError("a setup step is empty")
        return steps

    @field_validator("inputs")
    @classmethod
    def _inputs_relative(cls, paths: list[str]) -> list[str]:
        return _relative_paths(paths)


def _relative_paths(paths: list[str]) -> list[str]:
    for path in paths:
        if not path or path.startswith("/") or ".." in Path(path).parts:
            raise ValueError(f"{path!r} must be relative to the repository root, without '..'")
    return paths


class SandboxConfig(_Section):
    image: str | ImageConfig = DEFAULT_IMAGE
    """A ready image's name, or a `[sandbox.image]` table: the project image corral builds."""
    readonly_paths: list[str] = []
    hidden_paths: list[str] = []
    cpus: Annotated[float, Field(gt=0)] = 2.0
    memory: str = "4g"
    pids: Annotated[int, Field(ge=16)] = 512
    workdir: str = "/workspace"
    runtime: SandboxRuntime = "runc"
    """`CORRAL_SANDBOX_RUNTIME` overrides it on this host (`SandboxSpec.from_config` applies both)."""
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

    @property
    def image_name(self) -> str | None:
        """The ready image `image` names; None when it is a `[sandbox.image]` recipe."""
        return self.image if isinstance(self.image, str) else None


class TeamConfig(_Section):
    image: ImageConfig | None = None
    """`[team.image]`: the team's shared layer, FROM corral/agent; a project image builds FROM it."""


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
    allow_self_approval: bool = False
    """When false, the person who asked for a run (its requester) may not approve it or promote it."""


class ForgeConfig(_Section):
    backend: str = "local"
    """`local` (pull requests on this host, merged by git here) or `github`."""
    repository: str = ""
    """`owner/name` on GitHub (backend github)."""
    remote: str = ""
    """Where the run branch is pushed before its pull request opens (default
    `https://github.com/<repository>.git`), with the token as an HTTP header, never in a URL."""
    api_url: str = "https://api.github.com"
    token: str = "env:GITHUB_TOKEN"
    """Where corral reads the token on the host (`env:VAR` or `file:/path`); never in a sandbox."""


class DeployConfig(_Section):
    backend: str = "local"
    """`local` (build in a sandbox, serve on 127.0.0.1) or `vercel`."""
    build: str = ""
    """The build command, run in a fresh sandbox on the merged commit; empty means no deploy."""
    output: str = "dist"
    """The directory the build writes, relative to the repository: what is served."""
    timeout_seconds: Annotated[float, Field(gt=0)] = 600.0
    project_id: str = ""
    """The Vercel project id or name (backend vercel)."""
    team_id: str = ""
    api_url: str = "https://api.vercel.com"
    token: str = "env:VERCEL_TOKEN"
    repository: str = ""
    """`owner/name` of the git repository Vercel builds from (its gitSource)."""
    poll_seconds: Annotated[float, Field(gt=0)] = 2.0
    """How often a Vercel deployment's state is read while it builds."""


_DURATION = re.compile(r"^(\d+)([smhdw])$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_seconds(value: str) -> int:
    """'90s', '30m', '12h', '7d', '2w' in seconds; anything else is a ConfigError."""
    match = _DURATION.match(value.strip())
    if not match:
        raise ConfigError(f"{value!r} is not a duration like '7d', '12h' or '30m'", hint="use N[smhdw]")
    return int(match.group(1)) * _DURATION_SECONDS[match.group(2)]


class RegressConfig(_Section):
    margin: Annotated[float, Field(ge=0, lt=1)] = 0.05
    """Non-inferiority margin on the pass rate: a candidate fails when it is worse by more."""
    max_age: str = "7d"
    """A promotion needs a passing regression at most this old."""
    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.05
    power: Annotated[float, Field(gt=0, lt=1)] = 0.8
    min_tasks: Annotated[int, Field(ge=1)] = 8
    epochs: Annotated[int, Field(ge=1, le=20)] = 3

    @field_validator("max_age")
    @classmethod
    def _duration(cls, value: str) -> str:
        if not _DURATION.match(value.strip()):
            raise ValueError(f"{value!r} is not a duration like '7d', '12h' or '30m'")
        return value.strip()


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
    team: TeamConfig = TeamConfig()
    checks: ChecksConfig = ChecksConfig()
    secrets: dict[str, SecretConfig] = {}
    gateway: GatewayConfig = GatewayConfig()
    approval: ApprovalConfig = ApprovalConfig()
    forge: ForgeConfig = ForgeConfig()
    deploy: DeployConfig | None = None
    """Only a project with a `[deploy]` section is deployed after a merge."""
    limits: LimitsConfig = LimitsConfig()
    stores: StoresConfig = StoresConfig()
    regress: RegressConfig = RegressConfig()

    @model_validator(mode="after")
    def _team_image_under_a_recipe(self) -> Config:
        named = self.sandbox.image_name
        if self.team.image is not None and named is not None and named != DEFAULT_IMAGE:
            raise ValueError(
                f"[team.image] builds FROM corral/agent, but [sandbox].image names {named!r}: "
                "drop one of them (a [sandbox.image] table builds FROM the team image)"
            )
        return self

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


_UNION_TAGS = {"str", "ImageConfig"}
"""pydantic names the member of `image: str | ImageConfig` it tried; the user wrote only the key."""


def _key_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc if part not in _UNION_TAGS) or "(top level)"


def _other_union_member(error: Any, errors: list[Any]) -> bool:
    """A table under `image` also fails as a string: only the table's own errors say anything."""
    loc = error["loc"]
    return bool(loc) and loc[-1] == "str" and any(len(e["loc"]) > len(loc) for e in errors)


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
        errors = exc.errors()
        for error in errors:
            if _other_union_member(error, errors):
                continue
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
# A failing model upstream (429, 529, 5xx): Claude Code retries each request this many times, with
# backoff; then the run fails with "model upstream failed: ...". A stream silent this long is cut.
model_retries = 3
model_stream_idle_seconds = 120

[sandbox]
image = "corral/agent:default"    # your team's image, built FROM corral/agent:default
# Path patterns read as in .gitignore: no slash matches at any depth ("*.pem"), a slash anchors at
# the repository root ("config/secret.env", "/.env"), "*" stays within one directory, "**" crosses.
readonly_paths = []               # e.g. ["billing/**", "migrations/prod/**"]: mounted read-only
hidden_paths = []                 # e.g. ["secrets/**", ".env"]: masked, the agent cannot read them
agent_may_edit_config = false     # true lets the agent change corral.toml and the gateway file
runtime = "runc"                  # "runsc": gVisor's kernel between the agent and the host's
                                  # (`corral doctor` says how to install it); CORRAL_SANDBOX_RUNTIME overrides
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
allow_self_approval = false       # may the run's requester approve it? (CORRAL_USER or git user.email)

[forge]
backend = "local"                 # "local": PRs and merges on this host; "github": the GitHub REST API
# repository = "owner/name"       # for github
# token = "env:GITHUB_TOKEN"      # read on the host, never given to a sandbox

# [deploy]                        # after a merge, build and stage a preview; promote needs an approval
# build = "mkdir -p dist && cp index.html dist/"   # run in a fresh sandbox on the merged commit
# output = "dist"                 # served on 127.0.0.1 (backend "local"), one port per deployment
# backend = "local"               # or "vercel" with project_id, repository and token = "env:VERCEL_TOKEN"

[regress]                         # the gate every model upgrade passes (`corral regress`)
margin = 0.05                     # non-inferiority margin on the pass rate
max_age = "7d"                    # `corral model promote` needs a passing regression this fresh
alpha = 0.05                      # one-sided significance of the gate
power = 0.8                       # for the minimum detectable effect the report states
min_tasks = 8                     # fewer tasks than this is "inconclusive", never a pass
epochs = 3                        # re-runs per task and side

[stores]
# state_url = "postgresql+psycopg://user@host/corral"   # default: SQLite under .corral/
# audit_url = "mongodb://host:27017/corral"             # default: SQLite under .corral/
"""


_IMAGE_LINE = re.compile(r'^image = "corral/agent:default".*\n', re.M)
_CHECKS_LINE = 'command = "pytest -q"             # run in a fresh sandbox on the agent\'s result\n'


def init_text(name: str, base_branch: str = "main", repo: Path | None = None) -> str:
    """The commented corral.toml; with `repo`, a `[sandbox.image]` and checks command for what it holds."""
    from corral.detect import image_block, propose

    text = INIT_TEMPLATE.format(name=name, base_branch=base_branch, claude_code=DEFAULT_CLAUDE_CODE)
    proposal = propose(repo) if repo is not None else None
    if proposal is None or not proposal.found:
        return text
    text = _IMAGE_LINE.sub(
        '# image = "corral/agent:default"  # a ready image; [sandbox.image] below builds one\n', text, count=1
    )
    text = text.replace(
        _CHECKS_LINE, f"command = {json.dumps(proposal.checks_command)}   # matches [sandbox.image]\n"
    )
    return text.replace("pids = 512\n", "pids = 512\n" + image_block(proposal), 1)
