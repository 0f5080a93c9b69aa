"""`corral prefs list/add/retire/supersede/match`: a thin layer over corral.state.preferences."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from corral.cli import TeamOption, _services

if TYPE_CHECKING:
    from corral.config import Config
    from corral.state.db import StateStore
    from corral.state.models import Preference

# The state library (sqlalchemy, alembic) is imported inside the commands, so that every other
# `corral` command (and `corral --help`) starts without paying for it.

app = typer.Typer(help="Learned preferences: what reviewers taught the agent.", no_args_is_help=True)

Repo = Annotated[Path, typer.Option("--repo", help="Where corral.toml lives (project and team).")]
Project = Annotated[str | None, typer.Option("--project", help="Project name; default: corral.toml's.")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")]
Glob = Annotated[str | None, typer.Option("--glob", help="Path glob the rule applies to, e.g. 'billing/**'.")]
By = Annotated[str, typer.Option("--by", help="Who is adding it (recorded with the rule).")]


@contextmanager
def _store(repo: Path, team: str | None) -> Iterator[tuple[StateStore, Config]]:
    """The scoped team's state store (through `Services`) and the repository's config."""
    from corral.config import Config

    services = _services(team=team, repo=repo)
    try:
        yield services.state(), services.scope.config or Config()
    finally:
        services.close()


def _json(items: list[Preference] | Preference) -> None:
    data = (
        [p.model_dump(mode="json") for p in items]
        if isinstance(items, list)
        else items.model_dump(mode="json")
    )
    typer.echo(json.dumps(data, indent=2))


def _report(pref: Preference, as_json: bool, message: str) -> None:
    if as_json:
        _json(pref)
    else:
        typer.echo(message)


def _table(items: list[Preference], title: str) -> None:
    table = Table(title=title)
    for column in ("id", "project", "scope", "rule", "source", "conf.", "state"):
        table.add_column(column, overflow="fold")
    for p in items:
        if p.superseded_by is not None:
            state = f"superseded by {p.superseded_by}"
        elif p.retired_at is not None:
            state = "retired"
        else:
            state = "active" if p.valid_to is None else f"until {p.valid_to:%Y-%m-%d}"
        source = p.source_kind + (f" ({p.source_ref})" if p.source_ref else "")
        table.add_row(str(p.id), p.project, p.scope_glob or "", p.rule, source, f"{p.confidence:.1f}", state)
    Console().print(table)


@app.command("list")
def list_cmd(
    repo: Repo = Path("."),
    team: TeamOption = None,
    project: Project = None,
    show_all: Annotated[bool, typer.Option("--all", help="Include retired, superseded, expired.")] = False,
    as_json: Json = False,
) -> None:
    """List the project's preferences (active ones unless --all)."""
    from corral.state import preferences as prefs

    with _store(repo, team) as (store, config):
        items = prefs.list_preferences(store, project or config.project.name, include_inactive=show_all)
    if as_json:
        _json(items)
    elif not items:
        typer.echo(
            "no preferences yet: `corral reject RUN --feedback TEXT` or `corral prefs add RULE` adds one"
        )
    else:
        _table(items, f"preferences of {project or config.project.name}")


@app.command("add")
def add_cmd(
    rule: Annotated[str, typer.Argument(help="The rule the agent should follow.")],
    repo: Repo = Path("."),
    team: TeamOption = None,
    project: Project = None,
    glob: Glob = None,
    confidence: Annotated[float, typer.Option("--confidence", min=0.0, max=1.0)] = 1.0,
    by: By = "",
    as_json: Json = False,
) -> None:
    """Add a preference by hand."""
    from corral.state import preferences as prefs

    with _store(repo, team) as (store, config):
        pref = prefs.add_preference(
            store, project or config.project.name, rule, scope_glob=glob, confidence=confidence, created_by=by
        )
    _report(pref, as_json, f"added preference {pref.id}")


@app.command("retire")
def retire_cmd(
    pref_id: Annotated[int, typer.Argument(help="The preference id (see `corral prefs list`).")],
    repo: Repo = Path("."),
    team: TeamOption = None,
    as_json: Json = False,
) -> None:
    """Stop injecting a preference (it stays on record)."""
    from corral.state import preferences as prefs

    with _store(repo, team) as (store, _config):
        pref = prefs.retire(store, pref_id)
    _report(pref, as_json, f"retired preference {pref.id}")


@app.command("supersede")
def supersede_cmd(
    pref_id: Annotated[int, typer.Argument(help="The preference to replace.")],
    rule: Annotated[str, typer.Argument(help="The new rule.")],
    repo: Repo = Path("."),
    team: TeamOption = None,
    glob: Glob = None,
    by: By = "",
    as_json: Json = False,
) -> None:
    """Replace a preference with a new rule; the old one stops being injected."""
    from corral.state import preferences as prefs

    with _store(repo, team) as (store, _config):
        new = prefs.supersede(store, pref_id, rule, scope_glob=glob, created_by=by)
    _report(new, as_json, f"preference {pref_id} superseded by {new.id}")


@app.command("match")
def match_cmd(
    task: Annotated[str, typer.Argument(help="A task, as you would give it to `corral run`.")],
    repo: Repo = Path("."),
    team: TeamOption = None,
    project: Project = None,
    path: Annotated[
        list[str] | None, typer.Option("--path", help="A file the task will likely touch.")
    ] = None,
    budget: Annotated[int, typer.Option("--budget", min=1, help="Character budget.")] = 2000,
    as_json: Json = False,
) -> None:
    """Show which preferences a run with this task would get, and the prompt section."""
    from corral.state import preferences as prefs

    with _store(repo, team) as (store, config):
        paths = path or prefs.likely_paths_from_text(task) or None
        chosen = prefs.retrieve(store, project or config.project.name, task, paths, budget)
    if as_json:
        _json(chosen)
    else:
        typer.echo(prefs.render_prompt_section(chosen) or "no preference matches this task")
