"""`corral gateway serve` and `corral gateway check`: a thin layer over corral.gateway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from corral.cli import _services, sigterm_as_interrupt
from corral.errors import ConfigError, CorralError

if TYPE_CHECKING:
    from corral.audit import EventSink
    from corral.gateway.server import Gateway
    from corral.services import Services

# The gateway library (mcp, starlette, uvicorn) is imported inside the commands, so that every other
# `corral` command (and `corral --help`) starts without paying for it.

GATEWAY_FILE = "corral-gateway.toml"

app = typer.Typer(help="The MCP tool gateway: serve it, or dry-run a grant set.", no_args_is_help=True)

Repo = Annotated[Path, typer.Option("--repo", help="Where corral.toml (and corral-gateway.toml) live.")]
GatewayFile = Annotated[
    Path | None,
    typer.Option("--gateway-file", help=f"Upstreams, annotations, limits; default <repo>/{GATEWAY_FILE}."),
]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")]


def _gateway(
    services: Services, repo: Path, gateway_file: Path | None, sink: EventSink | None = None
) -> tuple[Gateway, list[str]]:
    from corral.config import Config
    from corral.deploy.local import LocalDeploy
    from corral.forge.local import LocalForge
    from corral.gateway.config import GatewayFileConfig, load_gateway_file
    from corral.gateway.run import build_gateway

    settings = services.settings
    config = services.scope.config or Config()
    default_file = repo / config.gateway.upstreams_file
    file_config = (
        load_gateway_file(gateway_file)
        if gateway_file
        else load_gateway_file(default_file)
        if default_file.is_file()
        else GatewayFileConfig()
    )
    gateway = build_gateway(
        file_config,
        secret_refs=config.secret_refs("gateway"),
        sink=sink,
        forge=LocalForge(settings.local_forge_dir),
        deploy=LocalDeploy(settings.deploy_dir),
        audience="corral-gateway:serve",
        log_dir=settings.home / "gateway",
    )
    return gateway, list(config.gateway.grants)


def _fail(exc: CorralError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


@app.command()
def check(
    token_grants: Annotated[
        list[str] | None, typer.Option("--token-grants", help="A grant; repeat it. Default: corral.toml's.")
    ] = None,
    repo: Repo = Path("."),
    gateway_file: GatewayFile = None,
    as_json: Json = False,
) -> None:
    """Print the tools, and the argument shapes, a grant set allows (a dry run for policy authors)."""
    from corral.gateway.check import check_grants

    services = _services(repo=repo)
    try:
        gateway, default_grants = _gateway(services, repo, gateway_file)
        result = check_grants(gateway, list(token_grants or default_grants))
    except CorralError as exc:
        _fail(exc)
        return
    finally:
        services.close()
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    table = Table(title=f"allowed by {len(result.grants)} grants (policy {result.policy_version})")
    for column in ("tool", "access", "arguments", "only when"):
        table.add_column(column)
    for tool in result.allowed:
        args = ", ".join(f"{k}: {v}" for k, v in tool.arguments.items()) or "-"
        table.add_row(tool.tool, tool.access, args, " and ".join(tool.constraints) or "any arguments")
    Console().print(table)
    if result.never_grantable:
        typer.echo("never grantable to agents: " + ", ".join(result.never_grantable))
    for name, why in result.unavailable_upstreams.items():
        typer.echo(f"warning: upstream {name} is unavailable: {why}", err=True)


@app.command()
def serve(
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to listen on (TCP).")] = "127.0.0.1:8765",
    grant: Annotated[
        list[str] | None,
        typer.Option("--grant", help="A grant for the printed token; repeat. Default: corral.toml's."),
    ] = None,
    ttl: Annotated[float, typer.Option("--ttl", help="Token lifetime in seconds.")] = 3600.0,
    repo: Repo = Path("."),
    gateway_file: GatewayFile = None,
    as_json: Json = False,
) -> None:
    """Serve the gateway over streamable HTTP and print one capability token for the given grants.

    Every decision and call is recorded in the audit log, hash-chained and redacted as a run's are,
    on a chain of its own (`corral audit show CHAIN` reads it).
    """
    from corral.gateway.serve import GatewayServer

    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        _fail(ConfigError(f"--listen {listen!r} is not HOST:PORT", hint="e.g. --listen 127.0.0.1:8765"))
    services = _services(repo=repo)
    chain = serve_chain_id()
    recorder = services.audit().for_run(chain)
    try:
        gateway, default_grants = _gateway(services, repo, gateway_file, recorder)
        server = GatewayServer(gateway, host=host or "127.0.0.1", port=int(port))
        server.start()
        grants = list(grant or default_grants)
        try:
            policy = gateway.policy(grants)
        except CorralError:
            server.stop()
            raise
        token, record = gateway.authority.mint(run_id=chain, grants=grants, ttl_seconds=ttl)
    except CorralError as exc:
        recorder.close()
        services.close()
        _fail(exc)
        return
    info = {
        "url": server.url,
        "token": token,
        "token_id": record.token_id,
        "policy_version": policy.version,
        "expires_at": record.expires_at,
        "audit": chain,
    }
    typer.echo(json.dumps(info) if as_json else "\n".join(f"{k}: {v}" for k, v in info.items()))
    sigterm_as_interrupt()  # so the audit chain is closed with its checkpoint
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop()
    finally:
        recorder.close()
        services.close()


def serve_chain_id() -> str:
    """The audit chain of one `corral gateway serve` session: sortable, and unique per start."""
    import secrets
    import time

    return f"gateway-serve-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"
