"""`corral init`, `corral doctor`, `corral gc`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from corral.cli import JsonFlag, RepoOption, ScopeRepoOption, TeamOption, _services, emit_json, out
from corral.errors import ConfigError


def register(app: typer.Typer) -> None:
    @app.command()
    def init(
        repo: RepoOption = Path("."),
        force: Annotated[bool, typer.Option(help="Overwrite an existing corral.toml.")] = False,
    ) -> None:
        """Write a commented corral.toml into the repository."""
        from corral.config import CONFIG_FILE, init_text

        path = repo / CONFIG_FILE
        if path.exists() and not force:
            raise ConfigError(f"{path}: already exists", hint="edit it, or pass --force to overwrite")
        path.write_text(init_text(repo.resolve().name, repo=repo.resolve()))
        out.print(f"wrote {path}", highlight=False)

    @app.command()
    def doctor(repo: RepoOption = Path("."), as_json: JsonFlag = False) -> None:
        """Check the Docker Engine, images, Claude Code version and stores; say how to fix what is missing."""
        from corral.doctor import run_checks

        checks = run_checks(_services(repo=repo), repo)
        if as_json:
            emit_json([dataclasses.asdict(c) for c in checks])
        else:
            for check in checks:
                mark = "[green]ok[/green]  " if check.ok else "[red]FAIL[/red]"
                out.print(f"{mark} {check.name:<14} {check.detail}", highlight=False)
                if not check.ok and check.fix:
                    out.print(f"      fix: {check.fix}", highlight=False)
        if not all(c.ok for c in checks):
            raise typer.Exit(1)

    @app.command()
    def gc(
        team: TeamOption = None,
        repo: ScopeRepoOption = None,
        images: Annotated[
            bool, typer.Option("--images", help="Also remove the team's project images no project uses.")
        ] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Remove what killed runs of the team left behind: containers, socket directories, worktrees;
        stop the local preview servers of its ended runs.

        A run waiting for a human (awaiting approval) keeps its phase and its branch: only what it no
        longer needs is removed. A run whose driving process died mid-phase is recorded as failed.
        With --images, project and team images that none of the team's projects uses today are
        removed too; an image a container was made from is never removed.
        """
        from corral.errors import SandboxError
        from corral.gc import collect

        services = _services(team=team, repo=repo)
        try:
            backend = services.sandbox_backend()
        except SandboxError:
            backend = None
        try:
            report = collect(services.settings, services.state(), backend, services.audit())
            found = dataclasses.asdict(report)
            if images:
                from corral.sandbox.image_gc import collect_images

                image_report = collect_images(services.docker(), services.state())
                found.update({f"images_{k}": v for k, v in dataclasses.asdict(image_report).items()})
        finally:
            services.close()
        if as_json:
            emit_json(found)
            return
        for label, items in found.items():
            if isinstance(items, int | str):  # a count, or the team's name: one line, not a list
                out.print(f"{label.replace('_', ' ')}: {items}", highlight=False)
                continue
            out.print(f"{label.replace('_', ' ')}: {len(items)}", highlight=False)
            for item in items:
                out.print(f"  {item}", highlight=False)
