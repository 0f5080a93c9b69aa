"""The run integration point: one gateway per run on the run's `gateway.sock`, with one agent token.

handle = RunGateway.start(RunGatewaySpec(run_id, grants, socket_path, forge=..., repo=..., head=...), sink)
mcp = handle.mcp_config("http://127.0.0.1:PORT/mcp")   # for the container's --mcp-config
allowed = handle.allowed_tool_names()                   # for Claude Code's allowedTools
...
handle.stop()                                           # revokes the token, stops upstreams
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.audit import EventSink
from corral.audit.redact import Redactor, process_redactor
from corral.config import Config
from corral.deploy import DeployTarget
from corral.forge import Forge
from corral.gateway.catalog import claude_code_name
from corral.gateway.config import GatewayFileConfig
from corral.gateway.serve import GatewayServer, Transport
from corral.gateway.server import Gateway
from corral.gateway.tokens import InMemoryTokenStore, TokenAuthority, TokenStore
from corral.gateway.tools import RunBinding
from corral.gateway.tools.deploy import deploy_upstream
from corral.gateway.tools.forge import forge_upstream
from corral.gateway.upstreams import Upstream, build_upstreams
from corral.secrets import SecretResolver

MCP_SERVER_NAME = "corral"


def build_gateway(
    config: GatewayFileConfig,
    *,
    secret_refs: Mapping[str, str],
    sink: EventSink | None,
    forge: Forge | None = None,
    deploy: DeployTarget | None = None,
    token_store: TokenStore | None = None,
    audience: str = "corral-gateway",
    log_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Gateway:
    """A gateway with the built-ins (when given a forge / deploy) and the configured upstreams.

    Upstream credentials resolve through the secrets providers: each resolution is audited on `sink`
    (name only) and its value registered for redaction, by the sink and by the gateway itself.
    """
    redactor = Redactor(forward_to=process_redactor())
    resolver = SecretResolver({**config.secrets, **secret_refs}, sink, environ)

    def secret(name: str) -> str:
        value = resolver.get(name, requester="gateway", purpose="upstream credential")
        redactor.register(name, value)
        return value

    bindings: dict[str, RunBinding] = {}
    upstreams: list[Upstream] = []
    if forge is not None:
        upstreams.append(forge_upstream(forge, bindings))
    if deploy is not None:
        upstreams.append(deploy_upstream(deploy, bindings))
    upstreams.extend(build_upstreams(config.upstreams, secret, resolver.check, log_dir))
    gateway = Gateway(
        authority=TokenAuthority(token_store or InMemoryTokenStore(), audience),
        upstreams=upstreams,
        annotations=config.annotations,
        rate_limits=config.rate_limits,
        redactor=redactor,
        default_sink=sink,
    )
    gateway.bindings = bindings  # the built-ins read the same mapping the gateway registers runs in
    return gateway


@dataclass
class RunGatewayHandle:
    run_id: str
    token: str
    """The clear run token: for the container's MCP config only. Never log it."""
    token_id: str
    policy_version: str
    socket_path: Path
    gateway: Gateway
    server: GatewayServer = field(repr=False)
    binding: RunBinding = field(repr=False)
    """What the run's built-in tools act on; holds the deploy requests the run carries out later."""

    def mcp_config(self, url: str) -> dict[str, Any]:
        """The `--mcp-config` document: Claude Code reaches `url` through the in-container bridge."""
        return {
            "mcpServers": {
                MCP_SERVER_NAME: {
                    "type": "http",
                    "url": url,
                    "headers": {"Authorization": f"Bearer {self.token}"},
                }
            }
        }

    def allowed_tool_names(self) -> list[str]:
        """Claude Code's names (`mcp__corral__<upstream>_<tool>`) of every tool this token may call."""
        record = self.gateway.authority.store.get(self.token_id)
        if record is None:
            return []
        return sorted(
            claude_code_name(e.qualified, MCP_SERVER_NAME) for e in self.gateway.visible_tools(record)
        )

    def surface(self) -> list[str]:
        """`qualified@schema_hash` of every tool this token may call: its part of the tool surface."""
        record = self.gateway.authority.store.get(self.token_id)
        if record is None:
            return []
        return sorted(f"{e.qualified}@{e.schema_hash}" for e in self.gateway.visible_tools(record))

    def revoke(self) -> None:
        self.gateway.authority.revoke(self.token_id)

    def stop(self) -> None:
        self.revoke()
        self.gateway.forget_run(self.run_id)
        self.server.stop()


@dataclass(frozen=True)
class RunGatewaySpec:
    """Everything one run's gateway is made of: who it serves, what it may reach, where it listens."""

    run_id: str
    grants: Sequence[str]
    socket_path: Path
    config: GatewayFileConfig = field(default_factory=GatewayFileConfig)
    """The team gateway file: upstreams, annotations, rate limits."""
    secret_refs: Mapping[str, str] = field(default_factory=dict)
    forge: Forge | None = None
    deploy: DeployTarget | None = None
    repo: Path | None = None
    head: str = ""
    base: str = "main"
    ttl_seconds: float = 3600.0
    max_uses: int | None = None
    token_store: TokenStore | None = None
    log_dir: Path | None = None
    environ: Mapping[str, str] | None = None
    transport: Transport = "lean"

    @classmethod
    def from_config(
        cls, config: Config, *, run_id: str, socket_path: Path, gateway_file: GatewayFileConfig, **wiring: Any
    ) -> RunGatewaySpec:
        """The project's `[gateway]` and `[secrets]`, plus the run's wiring (forge, repo, head, ...)."""
        return cls(
            run_id=run_id,
            grants=tuple(config.gateway.grants),
            socket_path=socket_path,
            config=gateway_file,
            secret_refs=config.secret_refs("gateway"),
            base=config.project.base_branch,
            ttl_seconds=config.gateway.token_ttl_seconds,
            **wiring,
        )


class RunGateway:
    @staticmethod
    def start(spec: RunGatewaySpec, sink: EventSink) -> RunGatewayHandle:
        """Start upstreams, validate the grants (ConfigError names a bad rule), serve on the spec's
        socket, and mint the run's agent token."""
        gateway = build_gateway(
            spec.config,
            secret_refs=spec.secret_refs,
            sink=sink,
            forge=spec.forge,
            deploy=spec.deploy,
            token_store=spec.token_store,
            audience=f"corral-gateway:{spec.run_id}",
            log_dir=spec.log_dir,
            environ=spec.environ,
        )
        binding = RunBinding(run_id=spec.run_id, repo=spec.repo, head=spec.head, base=spec.base, sink=sink)
        gateway.register_run(binding, sink)
        server = GatewayServer(gateway, uds=spec.socket_path, transport=spec.transport)
        server.start()
        grants = list(spec.grants)
        try:
            policy = gateway.policy(grants, agent=True)
            token, record = gateway.authority.mint(
                run_id=spec.run_id,
                grants=grants,
                ttl_seconds=spec.ttl_seconds,
                max_uses=spec.max_uses,
                principal="agent",
            )
        except BaseException:
            server.stop()
            raise
        return RunGatewayHandle(
            spec.run_id, token, record.token_id, policy.version, spec.socket_path, gateway, server, binding
        )
