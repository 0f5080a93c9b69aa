"""`corral run`, `corral demo`, `corral runs`, `corral show`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from corral.cli import (
    JsonFlag,
    RepoOption,
    ScopeRepoOption,
    TeamOption,
    _services,
    emit_json,
    err,
    out,
    sigterm_as_interrupt,
)
from corral.cli.progress import ProgressPrinter
from corral.display import visible, visible_line


def _run(
    task: str,
    repo: Path,
    playbook: Path | None,
    config: Path | None,
    as_json: bool,
    incident: Any = None,
    server: str | None = None,
) -> Any:
    from corral.runs import RunOrchestrator, RunRequest

    printer = ProgressPrinter(err, json_lines=as_json)
    if server:
        from corral.web.client import run_on_server

        record = run_on_server(server, task, repo, playbook, printer)
        if as_json:
            emit_json({"summary": record.model_dump(mode="json")})
        else:
            _print_summary(record)
        return record
    services = _services(printer.message, repo=repo)
    sigterm_as_interrupt()  # the run is recorded as failed and its container removed
    try:
        request = RunRequest(task=task, repo=repo, playbook=playbook, config_path=config, incident=incident)
        orchestrator = RunOrchestrator(services, [printer])
        run_id = orchestrator.run(request)
        record = orchestrator.record(run_id)
    finally:
        services.close()
    if as_json:
        emit_json({"summary": record.model_dump(mode="json")})
    else:
        _print_summary(record)
    return record


def _print_summary(record: Any) -> None:
    out.print(f"\nrun [bold]{record.run_id}[/bold]: {record.phase}", highlight=False)
    if record.failure_reason:
        out.print(f"  reason: {visible(record.failure_reason)}", highlight=False, markup=False)
    if record.diffstat:
        lines = "\n".join("    " + visible(ln) for ln in record.diffstat.splitlines())
        out.print(f"  diff ({record.branch}):\n" + lines, highlight=False, markup=False)
    if record.checks_passed is not None:
        out.print(f"  checks: {'passed' if record.checks_passed else 'failed'}")
    out.print(f"  see: corral show {record.run_id} | corral audit show {record.run_id}", highlight=False)


def _fetch_incident(repo: Path, source: Any) -> str:
    """The incident's summary through the repo's gateway, on the host, audited under its own id."""
    from corral.cli.gateway import _gateway
    from corral.incident.summary import fetch_summary

    fetch_id = f"incident-{source.vendor}-{source.kind}-{source.id}"
    services = _services(repo=repo)
    recorder = services.audit(services.scope.config).for_run(fetch_id)
    try:
        gateway, _ = _gateway(services, repo, None, recorder)
        return fetch_summary(gateway, source, run_id=fetch_id)
    finally:
        recorder.close()
        services.close()


def _incident_demo(target: Path | None, home: Path, as_json: bool) -> Any:
    """`corral demo --incident`: the Sentry fake, the demo repo with its gateway file, the incident run."""
    import os

    from corral.demo import DEMO_CONFIG, create_demo_repo
    from corral.incident import demo
    from corral.incident.fakes import FakeApi, make_tls
    from corral.incident.source import parse_source
    from corral.incident.summary import incident_task

    entry = demo.sentry_entry(home)  # before anything is created: say how to install it
    target = target or home / "demo" / time.strftime("incident-%Y%m%d-%H%M%S")
    scratch = target.with_name(target.name + ".fake")
    fake = FakeApi(demo.sentry_fixtures(), make_tls(scratch / "tls")).start()
    try:
        # The fake accepts any token; this one only lets the upstream start, and is never real.
        os.environ.setdefault(demo.DEMO_TOKEN_ENV, "demo-token-for-the-local-fake")
        files = {"corral-gateway.toml": demo.gateway_file(entry, fake, scratch)}
        repo = create_demo_repo(target, files, demo.config_text(DEMO_CONFIG))
        if not as_json:
            err.print(f"sample repository: {repo}; Sentry fake on https://{fake.host}", highlight=False)
        source = parse_source(demo.DEMO_SOURCE)
        task = incident_task(source, _fetch_incident(repo, source))
        return _run(task, repo, demo.playbook_path(), None, as_json, incident=source), repo
    finally:
        fake.stop()


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        task: Annotated[str, typer.Argument(help="What the agent should do, in plain words.")],
        repo: RepoOption = Path("."),
        playbook: Annotated[
            Path | None,
            typer.Option(help="Play this scripted-model playbook instead of calling a live model."),
        ] = None,
        config: Annotated[Path | None, typer.Option(help="corral.toml to use (default: the repo's).")] = None,
        server: Annotated[
            str | None,
            typer.Option(
                help="Submit to this corral server (URL) and follow it; token from CORRAL_SERVER_TOKEN."
            ),
        ] = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Run TASK on the repo in a fresh sandbox, up to awaiting_approval.

        Without ANTHROPIC_API_KEY in the environment, or with --playbook, the model is the scripted one.
        """
        record = _run(task, repo, playbook, config, as_json, server=server)
        if record.phase != "awaiting_approval":
            raise typer.Exit(1)

    @app.command()
    def incident(
        source: Annotated[
            str,
            typer.Argument(
                help="A Sentry issue URL, sentry:ORG/ID, datadog:monitor/ID or datadog:incident/ID."
            ),
        ],
        repo: RepoOption = Path("."),
        playbook: Annotated[
            Path | None,
            typer.Option(help="Play this scripted-model playbook instead of calling a live model."),
        ] = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Investigate one incident and propose a fix: the run reads it through the gateway, read-only.

        The incident's summary is fetched on the host first, so a bad SOURCE stops before any sandbox.
        """
        from corral.incident.source import parse_source
        from corral.incident.summary import incident_task

        parsed = parse_source(source)
        summary = _fetch_incident(repo, parsed)
        record = _run(incident_task(parsed, summary), repo, playbook, None, as_json, incident=parsed)
        if record.phase != "awaiting_approval":
            raise typer.Exit(1)

    @app.command()
    def demo(
        directory: Annotated[
            Path | None, typer.Option("--dir", help="Where to create the sample repository.")
        ] = None,
        as_json: JsonFlag = False,
        incident: Annotated[
            bool,
            typer.Option(
                "--incident", help="Start from a Sentry issue (a local fake) read through the gateway."
            ),
        ] = False,
    ) -> None:
        """Create a small repo with a failing test and let the scripted agent fix it, end to end."""
        from corral.demo import DEMO_TASK, create_demo_repo, demo_playbook_path

        services = _services()
        if incident:
            record, repo = _incident_demo(directory, services.settings.home, as_json)
        else:
            target = directory or services.settings.home / "demo" / time.strftime("sample-%Y%m%d-%H%M%S")
            repo = create_demo_repo(target)
            if not as_json:
                err.print(f"sample repository: {repo} (calc.add has a bug; its test fails)", highlight=False)
            record = _run(DEMO_TASK, repo, demo_playbook_path(), None, as_json)
        run_id = record.run_id
        if not as_json:
            out.print("\nwhere to look next:", highlight=False)
            out.print(f"  corral show {run_id}           the summary, diff and checks", highlight=False)
            out.print(f"  corral audit show {run_id}     what the agent saw, decided, did", highlight=False)
            out.print(f"  corral audit verify {run_id}   prove nobody edited the log", highlight=False)
            out.print(f"  git -C {repo} log -p corral/{run_id}", highlight=False)
            if record.phase == "awaiting_approval":
                out.print(
                    "\nto ship it (someone other than the requester approves, see [approval]):",
                    highlight=False,
                    markup=False,
                )
                out.print(f"  corral approve {run_id} --repo {repo}", highlight=False)
        if record.phase != "awaiting_approval":
            raise typer.Exit(1)

    @app.command("runs")
    def list_runs(
        limit: Annotated[int, typer.Option(help="How many runs, newest first.")] = 20,
        team: TeamOption = None,
        repo: ScopeRepoOption = None,
        as_json: JsonFlag = False,
    ) -> None:
        """List recent runs of the team."""
        services = _services(team=team, repo=repo)
        try:
            records = services.state().list_runs(limit=limit)
        finally:
            services.close()
        if as_json:
            emit_json([r.model_dump(mode="json") for r in records])
            return
        table = Table("run", "phase", "project", "task", "created", "cost")
        for r in records:
            table.add_row(
                r.run_id,
                str(r.phase),
                visible_line(r.project),
                visible_line(r.task)[:50],  # cut once redacted: a cut value matches no form
                f"{r.created_at:%Y-%m-%d %H:%M}",
                f"${r.cost_usd:.4f}",
            )
        out.print(table)

    @app.command()
    def show(
        run_id: Annotated[str, typer.Argument(help="A run id, or a unique prefix of one.")],
        team: TeamOption = None,
        repo: ScopeRepoOption = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Show a run: summary, diff stat, checks, events count and cost, and where it went after the
        sandbox: its pull request, approvals and rejections, the merge and its deployments."""
        from corral.delivery.status import delivery_lines, delivery_of

        services = _services(team=team, repo=repo)
        try:
            record = services.find_run(run_id)
            events = services.audit().read(record.run_id)
            delivery = delivery_of(record, events, services.state().list_approvals(record.run_id))
        finally:
            services.close()
        if as_json:
            emit_json(
                {
                    **record.model_dump(mode="json"),
                    "events": len(events),
                    "delivery": delivery.model_dump(mode="json"),
                }
            )
            return
        out.print(f"[bold]{record.run_id}[/bold]  {record.phase}", highlight=False)
        # The task, the repo path, the failure reason and the diff stat's file names can all carry
        # what an agent or a repository wrote: shown as text, with escapes made visible.
        rows = [
            ("task", record.task),
            ("project", record.project),
            ("repo", record.repo),
            ("branch", f"{record.branch} from {record.base_commit[:10]}"),
            ("model", f"{record.model} (small: {record.small_model})"),
            ("elapsed", f"{record.elapsed_seconds:.1f}s" if record.elapsed_seconds is not None else "-"),
            ("cost", f"${record.cost_usd:.4f}  tokens in {record.input_tokens} / out {record.output_tokens}"),
            (
                "checks",
                "-" if record.checks_passed is None else ("passed" if record.checks_passed else "failed"),
            ),
            ("events", str(len(events))),
        ]
        if record.failure_reason:
            rows.append(("failure", record.failure_reason))
        rows.extend(delivery_lines(delivery))
        for key, value in rows:
            out.print(f"  {key:<8} {visible_line(value)}", highlight=False, markup=False)
        if record.diffstat:
            lines = "\n".join("    " + visible(line) for line in record.diffstat.splitlines())
            out.print("  diff\n" + lines, highlight=False, markup=False)


def register_review(app: typer.Typer) -> None:
    @app.command()
    def reject(
        run_id: Annotated[str, typer.Argument(help="The run (or a unique prefix of its id).")],
        feedback: Annotated[
            str, typer.Option(help="What was wrong; kept as a preference for future runs.")
        ] = "",
        reviewer: Annotated[
            str | None, typer.Option("--as", help="Who rejects (default: your user name).")
        ] = None,
        team: TeamOption = None,
        repo: ScopeRepoOption = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Reject a run awaiting approval; its feedback teaches the project's next runs."""
        from corral.review import default_reviewer
        from corral.review import reject as reject_run

        services = _services(team=team, repo=repo)
        try:
            result = reject_run(services, run_id, feedback, reviewer or default_reviewer())
        finally:
            services.close()
        if as_json:
            emit_json(
                {
                    "run_id": result.run_id,
                    "approval": result.approval.model_dump(mode="json"),
                    "preference": result.preference.model_dump(mode="json") if result.preference else None,
                }
            )
            return
        out.print(f"run {result.run_id}: rejected", highlight=False)
        if result.preference is not None:
            out.print(
                f"  feedback kept as preference #{result.preference.id} for {result.preference.project}"
            )
