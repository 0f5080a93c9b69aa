"""`corral image build` and `corral image list`: a thin layer over corral.sandbox.images."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from corral.display import visible
from corral.errors import CorralError

# corral.sandbox.images pulls in the docker SDK; it is imported inside the commands so that every
# other `corral` command (and `corral --help`) starts without paying for it.

app = typer.Typer(help="Build and list corral's container images (no registry needed).", no_args_is_help=True)


def _fail(exc: CorralError, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"error": exc.message, "hint": exc.hint}))
    else:
        # A failed build's message carries the setup step's output: repository code wrote it.
        Console(stderr=True).print(f"[red]error:[/red] {escape(visible(str(exc)))}", highlight=False)
    raise typer.Exit(1)


@app.command("build")
def build(
    force: bool = typer.Option(False, "--force", help="Rebuild even when the images exist."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    repo: Path = typer.Option(Path("."), "--repo", help="Where corral.toml (the Claude Code pin) lives."),
) -> None:
    """Build corral/base:bookworm (debootstrap + docker import) and corral/agent:default, then the
    team and project images that corral.toml's `[team.image]` and `[sandbox.image]` describe."""
    from corral.config import load_config
    from corral.sandbox.images import AGENT_IMAGE, BASE_IMAGE, build_images, docker_client
    from corral.sandbox.project_image import build_chain, has_recipe

    console = Console(stderr=True)

    def progress(message: str) -> None:
        if not as_json:
            console.print(f"[dim]{escape(visible(message))}[/dim]", highlight=False)

    try:
        config = load_config(repo.resolve())
        pin = config.agent.claude_code
        client = docker_client()
        report = build_images(client, pin, force=force, progress=progress)
        project = (
            build_chain(client, config, repo.resolve(), progress=progress, force=force)
            if has_recipe(config)
            else []
        )
    except CorralError as exc:
        _fail(exc, as_json)
        return
    result: dict[str, object] = {
        "base": {
            "image": BASE_IMAGE,
            "id": report.base_id,
            "seconds": round(report.base_seconds, 1),
            "built": report.built_base,
        },
        "agent": {
            "image": AGENT_IMAGE,
            "id": report.agent_id,
            "claude_code": pin,
            "seconds": round(report.agent_seconds, 1),
            "built": report.built_agent,
        },
    }
    result["project"] = [
        {"image": p.tag, "id": p.image_id, "seconds": round(p.seconds, 1), "built": p.built} for p in project
    ]
    if as_json:
        typer.echo(json.dumps(result))
    else:
        verb = {True: "built", False: "already there"}
        typer.echo(
            f"{BASE_IMAGE}: {verb[report.built_base]} ({report.base_seconds:.1f} s); "
            f"{AGENT_IMAGE}: {verb[report.built_agent]}, Claude Code {pin} ({report.agent_seconds:.1f} s)"
        )
        for image in project:
            typer.echo(f"{image.tag}: {verb[image.built]} ({image.seconds:.1f} s)")


def _age(created: str) -> str:
    from datetime import UTC, datetime

    try:
        # Docker's timestamps carry nanoseconds; fromisoformat takes at most microseconds.
        head = created.removesuffix("Z").partition(".")[0]
        stamp = datetime.fromisoformat(head).replace(tzinfo=UTC)
    except ValueError:
        return "?"
    seconds = max(0.0, (datetime.now(UTC) - stamp).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print the images as JSON.")) -> None:
    """List corral's images and the images built FROM them, with the Claude Code each carries."""
    from corral.sandbox.images import docker_client, list_images

    try:
        rows = list_images(docker_client())
    except CorralError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        typer.echo(json.dumps([asdict(row) for row in rows]))
        return
    table = Table("image", "id", "kind", "claude code", "inputs hash", "size", "age")
    for row in rows:
        table.add_row(
            ", ".join(row.tags) or "(untagged)",
            row.id.removeprefix("sha256:"),
            row.kind,
            row.claude_code or "-",
            row.inputs_hash or "-",
            f"{row.size_bytes / 1e6:.0f} MB",
            _age(row.created),
        )
    Console().print(table)
    if not rows:
        typer.echo("no corral images yet: run `corral image build`")
