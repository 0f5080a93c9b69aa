"""`corral model pin/history/promote`: the project's pinned models, and the gate on changing them."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from corral.cli import JsonFlag, ScopeRepoOption, TeamOption, _services, emit_json, out

app = typer.Typer(
    help="Pinned models: pin, history, promote (gated on a passing regression).", no_args_is_help=True
)

Project = Annotated[str | None, typer.Option("--project", help="Project name; default: corral.toml's.")]
By = Annotated[str | None, typer.Option("--by", help="Who is acting (default: your user name).")]
Reason = Annotated[str, typer.Option("--reason", help="Why; kept in the pin history.")]


def _who(by: str | None) -> str:
    from corral.review import default_reviewer

    return by or default_reviewer()


def _surface_of(services: Any, run_id: str) -> tuple[str, str]:
    """(Claude Code version, tool-surface hash) that a run's agent reported at init."""
    from corral.errors import NotFound
    from corral.events import AgentInit

    record = services.find_run(run_id)
    for event in services.audit().read(record.run_id):
        if isinstance(event, AgentInit):
            return event.claude_code_version, event.tool_surface_hash
    raise NotFound(
        f"run {record.run_id} has no agent.init report "
        "(it failed before Claude Code started, or predates the report)",
        hint="pin from a run that reached the agent: see `corral runs`",
    )


@app.command()
def pin(
    model: Annotated[
        str | None, typer.Option("--model", help="Dated model id; default: corral.toml's.")
    ] = None,
    small_model: Annotated[str | None, typer.Option("--small-model", help="Default: corral.toml's.")] = None,
    claude_code: Annotated[str | None, typer.Option("--claude-code", help="CLI version.")] = None,
    from_run: Annotated[
        str | None,
        typer.Option("--from-run", help="Take the CLI version and tool-surface hash from this run."),
    ] = None,
    tool_surface: Annotated[str | None, typer.Option("--tool-surface", help="Tool-surface hash.")] = None,
    project: Project = None,
    reason: Reason = "",
    by: By = None,
    team: TeamOption = None,
    repo: ScopeRepoOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Pin the project's model, small model, Claude Code version and tool surface (history is kept)."""
    from corral.config import Config, _require_dated

    services = _services(team=team, repo=repo)
    try:
        config = services.scope.config or Config()
        version, surface = (claude_code or config.agent.claude_code), (tool_surface or "")
        if from_run:
            reported, surface_hash = _surface_of(services, from_run)
            version, surface = claude_code or reported or version, tool_surface or surface_hash
        record = services.state().pin_model(
            project or config.project.name,
            _require_dated(model or config.agent.model),
            _require_dated(small_model or config.agent.small_model),
            version,
            pinned_by=_who(by),
            tool_surface_hash=surface,
            reason=reason,
        )
    except ValueError as exc:
        from corral.errors import ConfigError

        raise ConfigError(str(exc), hint="pass an exact dated id such as claude-sonnet-4-5-20250929") from exc
    finally:
        services.close()
    if as_json:
        emit_json(record.model_dump(mode="json"))
        return
    out.print(
        f"pinned {record.project}: {record.model} / {record.small_model}, Claude Code {record.claude_code}, "
        f"tool surface {record.tool_surface_hash or '(not pinned)'}",
        highlight=False,
    )


@app.command()
def history(
    project: Project = None, team: TeamOption = None, repo: ScopeRepoOption = None, as_json: JsonFlag = False
) -> None:
    """The project's pins, newest first: who, when and why."""
    from corral.config import Config

    services = _services(team=team, repo=repo)
    try:
        name = project or (services.scope.config or Config()).project.name
        pins = services.state().pin_history(name)
    finally:
        services.close()
    if as_json:
        emit_json([p.model_dump(mode="json") for p in pins])
        return
    if not pins:
        out.print(f"project {name} has no model pin", highlight=False)
    for p in pins:
        out.print(
            f"#{p.id} {p.pinned_at:%Y-%m-%d %H:%M} {p.model} / {p.small_model} cc {p.claude_code} "
            f"by {p.pinned_by}: {p.reason}",
            highlight=False,
            markup=False,
        )


@app.command()
def promote(
    model: Annotated[str, typer.Argument(help="The candidate's dated model id.")],
    project: Project = None,
    reason: Reason = "",
    by: By = None,
    team: TeamOption = None,
    repo: ScopeRepoOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Pin MODEL, only if a passing regression of it on this project is newer than [regress] max_age."""
    from corral.config import Config
    from corral.regress.gate import promote as promote_model

    services = _services(team=team, repo=repo)
    try:
        config = services.scope.config or Config()
        record = promote_model(
            services.state(), project or config.project.name, model, config, actor=_who(by), reason=reason
        )
    finally:
        services.close()
    if as_json:
        emit_json(record.model_dump(mode="json"))
        return
    out.print(f"promoted {record.model} on {record.project} ({record.reason})", highlight=False)
