"""`corral regress` (a candidate model against the pinned one) and `corral replay RUN` (our harness)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from corral.cli import (
    JsonFlag,
    ScopeRepoOption,
    TeamOption,
    _services,
    emit_json,
    err,
    out,
    sigterm_as_interrupt,
)

EXIT = {"pass": 0, "empty": 0, "fail": 1, "inconclusive": 3}
"""`corral regress` exit codes: 0 pass (or nothing to compare), 1 a regression, 3 inconclusive."""


def register(app: typer.Typer) -> None:
    @app.command()
    def regress(
        action: Annotated[
            str | None,
            typer.Argument(
                help="schedule (with --cron), schedules (list them) or unschedule; none: run it now."
            ),
        ] = None,
        candidate: Annotated[
            str | None, typer.Option("--candidate", help="The candidate's dated model id.")
        ] = None,
        cron: Annotated[
            str | None, typer.Option("--cron", help='With schedule: when, e.g. "0 2 * * *".')
        ] = None,
        since: Annotated[
            str, typer.Option("--since", help="The window of recorded runs, e.g. 7d, 12h.")
        ] = "7d",
        project: Annotated[str | None, typer.Option("--project", help="Only this project's runs.")] = None,
        epochs: Annotated[
            int | None,
            typer.Option("--epochs", min=1, help="Runs per task and side (default [regress] epochs)."),
        ] = None,
        concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Runs at once.")] = 1,
        rerun_baseline: Annotated[
            bool,
            typer.Option(
                "--rerun-baseline", help="Re-run the pinned model too, instead of its recorded runs."
            ),
        ] = False,
        playbooks: Annotated[
            Path | None,
            typer.Option(
                "--playbooks", help="Play the candidate with the scripted model (a candidate YAML file)."
            ),
        ] = None,
        baseline_playbooks: Annotated[
            Path | None, typer.Option("--baseline-playbooks", help="The same, for --rerun-baseline.")
        ] = None,
        output: Annotated[
            Path | None, typer.Option("--output", help="Directory for the HTML and JSON report.")
        ] = None,
        team: TeamOption = None,
        repo: ScopeRepoOption = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Re-run the window's human-decided tasks with CANDIDATE and gate on paired statistics.

        Exit 0: pass (or nothing to compare), 1: a regression, 3: inconclusive (too few tasks).
        `corral regress schedule --candidate M --cron "0 2 * * *"` makes it a Temporal Schedule."""
        if action is not None:
            from corral.cli.regress_schedule import scheduled

            given = {"since": since, "project": project, "epochs": epochs, "playbooks": playbooks}
            scheduled(action, candidate, cron, given, output, team, repo, as_json)
            return
        if candidate is None:
            raise typer.BadParameter("--candidate is required", param_hint="--candidate")
        from datetime import timedelta

        from corral.config import _require_dated, duration_seconds
        from corral.errors import ConfigError
        from corral.regress.report import report_json
        from corral.regress.suite import SuiteOptions, run_and_report
        from corral.review import default_reviewer

        try:
            _require_dated(candidate)
        except ValueError as exc:
            raise ConfigError(str(exc), hint="pass the candidate's exact dated id") from exc
        services = _services(lambda m: err.print(m, highlight=False, markup=False), team=team, repo=repo)
        sigterm_as_interrupt()
        try:
            options = SuiteOptions(
                candidate=candidate,
                since=timedelta(seconds=duration_seconds(since)),
                project=project,
                epochs=epochs,
                concurrency=concurrency,
                rerun_baseline=rerun_baseline,
                playbooks=playbooks,
                baseline_playbooks=baseline_playbooks,
                created_by=default_reviewer(),
            )
            suite = run_and_report(services, options, output or services.settings.home / "regress")
        finally:
            services.close()
        data = report_json(suite)
        if as_json:
            emit_json({**data, "report": suite.report_paths})
        elif suite.analysis is None:
            out.print(f"nothing to compare: no human-decided runs in the last {since}", highlight=False)
        else:
            a = suite.analysis
            partial = " (partial: interrupted)" if suite.partial else ""
            out.print(f"{candidate} against {suite.baseline_model}: {a.verdict}{partial}", highlight=False)
            out.print(f"  {a.reason}", highlight=False, markup=False)
            out.print(
                f"  {a.tasks} tasks x {a.epochs} epochs; "
                f"pass rate {a.baseline_rate:.2f} -> {a.candidate_rate:.2f}; "
                f"difference {a.difference:+.3f} "
                f"[{a.difference_interval[0]:+.3f}, {a.difference_interval[1]:+.3f}]; "
                f"MDE {a.mde:.2f}",
                highlight=False,
            )
            for task in a.regressions:
                out.print(f"  regression: {task}", highlight=False, markup=False)
        if not as_json:
            for key, reason in suite.window.skipped:
                out.print(f"  skipped: {key}: {reason}", highlight=False, markup=False)
            if suite.report_paths:
                out.print(f"  report: {suite.report_paths['html']}", highlight=False)
        code = 130 if suite.partial else EXIT[suite.verdict]
        if code:
            raise typer.Exit(code)

    @app.command()
    def replay(
        run_id: Annotated[str, typer.Argument(help="The recorded run (or a unique prefix of its id).")],
        config: Annotated[Path | None, typer.Option("--config", help="corral.toml to replay with.")] = None,
        team: TeamOption = None,
        repo: ScopeRepoOption = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Re-drive a recorded run from its cassette and report the first divergence (exit 1 if any)."""
        from corral.regress.replay import replay_run

        services = _services(lambda m: err.print(m, highlight=False, markup=False), team=team, repo=repo)
        sigterm_as_interrupt()
        try:
            report = replay_run(services, run_id, config_path=config)
        finally:
            services.close()
        if as_json:
            emit_json(report.as_json())
        else:
            state = "identical" if report.identical else "diverged"
            out.print(
                f"replay {report.replay_id} of {report.run_id}: {state} ({report.replayed_steps} of "
                f"{report.steps} steps; diff {'identical' if report.diff_identical else 'differs'})",
                highlight=False,
            )
            if report.divergence is not None:
                out.print(f"  first divergence {report.divergence.describe()}", highlight=False, markup=False)
            for note in report.notes:
                out.print(f"  note: {note}", highlight=False, markup=False)
        if not report.identical:
            raise typer.Exit(1)
