"""`corral approve`, `corral comment`, and the `corral deploy` group (list, promote, rollback)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from corral.cli import JsonFlag, ScopeRepoOption, TeamOption, _services, emit_json, err, out
from corral.display import visible_line

app = typer.Typer(no_args_is_help=True)

RunArg = Annotated[str, typer.Argument(help="The run (or a unique prefix of its id).")]
CommentOption = Annotated[str, typer.Option("--comment", help="Why; kept with the approval.")]


def _delivered(result: Any, as_json: bool) -> None:
    dep = result.deployment
    if as_json:
        emit_json(
            {
                "run_id": result.run_id,
                "phase": result.phase.value,
                "head_sha": result.head_sha,
                "merge_commit": result.merge_commit,
                "resumed": result.resumed,
                "deployment": dep.model_dump(mode="json") if dep is not None else None,
            }
        )
        return
    out.print(f"run {result.run_id}: {result.phase.value}", highlight=False)
    if result.resumed:
        out.print("  finished an approval an earlier `corral approve` recorded", highlight=False)
    if result.merge_commit:
        out.print(f"  merged {result.head_sha[:12]} as {result.merge_commit}", highlight=False)
    if dep is not None:
        out.print(f"  {dep.state} {dep.id}: {visible_line(dep.url)}", highlight=False, markup=False)
        if dep.state == "staged":
            out.print(f"  promote it: corral deploy promote {result.run_id}", highlight=False)


def register(main: typer.Typer) -> None:
    @main.command()
    def approve(
        run_id: RunArg,
        comment: CommentOption = "",
        override: Annotated[
            bool, typer.Option("--override", help="Approve although the checks failed (audited).")
        ] = False,
        team: TeamOption = None,
        repo: ScopeRepoOption = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Approve a run awaiting approval: merge exactly its reviewed commit, then stage its deploy.

        Rerun it on a run whose earlier approval was interrupted to finish the merge and the stage.
        """
        from corral.delivery.approve import approve as approve_run
        from corral.identity import current_user

        services = _services(err.print, team=team, repo=repo)
        try:
            result = approve_run(
                services, run_id, approver=current_user(), comment=comment, override=override
            )
        finally:
            services.close()
        _delivered(result, as_json)

    @main.command("comment")
    def comment_cmd(
        run_id: RunArg,
        text: Annotated[str, typer.Argument(help="The review comment.")] = "",
        from_forge: Annotated[
            bool, typer.Option("--from-forge", help="Record the pull request's review comments instead.")
        ] = False,
        team: TeamOption = None,
        repo: ScopeRepoOption = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Comment on a run's pull request; each comment is offered as a candidate preference."""
        from corral.delivery.approve import comment as comment_run
        from corral.delivery.approve import pull_review_comments
        from corral.identity import current_user

        services = _services(team=team, repo=repo)
        try:
            if from_forge:
                prefs = pull_review_comments(services, run_id)
                number = None
            else:
                number, pref = comment_run(services, run_id, author=current_user(), body=text)
                prefs = [pref]
        finally:
            services.close()
        if as_json:
            emit_json({"pull_request": number, "preferences": prefs})
            return
        where = f"pull request #{number}" if number is not None else "the forge's review comments"
        shown = ", ".join(f"#{p}" for p in prefs) or "none new"
        out.print(f"recorded {where}; candidate preferences: {shown}", highlight=False)


@app.command()
def promote(
    run_id: RunArg,
    comment: CommentOption = "",
    team: TeamOption = None,
    repo: ScopeRepoOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Promote a run's staged deployment to production (its own approval, under the same rules)."""
    from corral.delivery.approve import promote as promote_run
    from corral.identity import current_user

    services = _services(team=team, repo=repo)
    try:
        result = promote_run(services, run_id, approver=current_user(), comment=comment)
    finally:
        services.close()
    _delivered(result, as_json)


@app.command()
def rollback(
    project: Annotated[
        str | None, typer.Option("--project", help="The project (default: the repository's corral.toml).")
    ] = None,
    team: TeamOption = None,
    repo: ScopeRepoOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Switch the project's production back to the build it served before."""
    from corral.delivery.approve import rollback as rollback_project
    from corral.errors import ConfigError
    from corral.identity import current_user

    services = _services(team=team, repo=repo)
    try:
        name = project or (services.scope.config.project.name if services.scope.config else None)
        if not name:
            raise ConfigError(
                "which project? no --project and no corral.toml here", hint="pass --project NAME"
            )
        dep = rollback_project(services, name, approver=current_user())
    finally:
        services.close()
    if as_json:
        emit_json(dep.model_dump(mode="json"))
        return
    out.print(
        f"production of {name} is {dep.id} again: {visible_line(dep.url)}", highlight=False, markup=False
    )


@app.command("list")
def list_deployments(
    run_id: Annotated[str | None, typer.Argument(help="Only this run's deployments.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the local deployments, newest last."""
    from corral.deploy.local import LocalDeploy

    services = _services()
    try:
        deps = LocalDeploy(services.settings.deploy_dir).list(run_id)
    finally:
        services.close()
    if as_json:
        emit_json([d.model_dump(mode="json") for d in deps])
        return
    for d in deps:
        line = f"{d.id} {d.state:<9} {d.project or '-'} run {d.run_id} {d.ref[:12]} {d.url} {d.error[:80]}"
        out.print(visible_line(line), highlight=False, markup=False)
