"""`corral audit {runs,tail,show,verify,export}`: a thin layer over corral.audit."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from corral.cli import ScopeRepoOption, TeamOption
from corral.errors import CorralError, NotFound, RunNotFound, StoreError

if TYPE_CHECKING:
    from corral.audit.log import AuditLog
    from corral.audit.verify import VerifyReport
    from corral.services import Services

# The audit library (its stores bring sqlalchemy and pymongo) is imported inside the commands, so
# that every other `corral` command (and `corral --help`) starts without paying for it.

app = typer.Typer(no_args_is_help=True, help="Read, verify and export the audit log.")
out = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")]
UrlOption = Annotated[
    str | None, typer.Option("--store", help="Audit store URL (default: CORRAL_AUDIT_URL, else SQLite).")
]


def _print_json(data: Any) -> None:
    from corral.display import json_text

    print(json_text(data))


@dataclass
class _Scoped:
    """The audit log, and the run ids of the command's team (`corral.scope`)."""

    log: AuditLog
    services: Services

    def run_id(self, run: str) -> str:
        """A run of the team by id or unique prefix; else the exact chain id, if the log holds it.

        The second case covers chains that are not runs (`corral gateway serve` sessions) and a
        machine that has only the audit store.
        """
        try:
            return str(self.services.find_run(run).run_id)
        except RunNotFound:
            if self.log.rows(run):
                return run
            raise
        except (NotFound, StoreError):
            return run


@contextmanager
def _audit(url: str | None, team: str | None = None, repo: Path | None = None) -> Iterator[_Scoped]:
    from corral.audit.log import AuditLog
    from corral.cli import _services

    try:
        services = _services(team=team, repo=repo)
        audit = AuditLog.open(
            services.settings, url or services.audit_url(), allow_offline=True, background=False
        )
    except CorralError as exc:
        _fail(exc)
    try:
        yield _Scoped(audit, services)
    except CorralError as exc:
        _fail(exc)
    finally:
        audit.close()
        services.close()


def _fail(exc: CorralError) -> typer.Exit:
    from rich.markup import escape

    from corral.display import visible

    err.print(f"[bold red]error:[/bold red] {escape(visible(exc.message))}", highlight=False)
    if exc.hint:
        err.print(f"[yellow]hint:[/yellow] {escape(visible(exc.hint))}", highlight=False)
    raise typer.Exit(2)


@app.command("runs")
def runs_cmd(store: UrlOption = None, repo: ScopeRepoOption = None, as_json: JsonFlag = False) -> None:
    """List the runs the audit store holds."""
    with _audit(store, repo=repo) as scoped:
        runs = scoped.log.runs()
    if as_json:
        _print_json([dataclasses.asdict(r) for r in runs])
        return
    for r in runs:
        out.print(f"{r.run_id}  {r.events:>6} events  {r.first_ts[:19]} → {r.last_ts[:19]}", highlight=False)


@app.command()
def tail(
    run: Annotated[str, typer.Argument(help="The run id (or a unique prefix), or an audit chain id.")],
    follow: Annotated[bool, typer.Option("--follow/--no-follow", help="Keep printing new events.")] = True,
    interval: Annotated[float, typer.Option(help="Seconds between polls while following.")] = 0.5,
    store: UrlOption = None,
    team: TeamOption = None,
    repo: ScopeRepoOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Print a run's events as they arrive (from the store and the local spool); stops at run.finished."""
    from corral.audit.timeline import render, timeline
    from corral.display import json_line
    from corral.events import parse_event

    last = 0
    with _audit(store, team, repo) as scoped:
        run = scoped.run_id(run)
        while True:
            rows = scoped.log.rows(run, last)
            for row in rows:
                event = parse_event(row.data)
                if as_json:
                    print(json_line(row.data), flush=True)
                else:
                    entries = timeline([event], match_model=False)
                    render(entries, out, details=False)
                last = row.seq
                if event.kind == "run.finished":
                    follow = False
            if not follow:
                return
            time.sleep(interval)


@app.command()
def show(
    run: Annotated[str, typer.Argument(help="The run id (or a unique prefix), or an audit chain id.")],
    details: Annotated[bool, typer.Option("--details/--no-details", help="Show diffs and outputs.")] = True,
    store: UrlOption = None,
    team: TeamOption = None,
    repo: ScopeRepoOption = None,
    as_json: JsonFlag = False,
) -> None:
    """The run's timeline: what the agent saw, decided, did, and what shipped."""
    from corral.audit.timeline import counts, render, timeline

    with _audit(store, team, repo) as scoped:
        run = scoped.run_id(run)
        events = scoped.log.read(run)
        # A patch or output moved into a side file is shown from it (the host's, or the store's copy).
        entries = [
            e.model_copy(update={"detail": scoped.log.blobs.resolve(e.detail)}) for e in timeline(events)
        ]
    if not events:
        _fail(
            NotFound(f"the audit log has no events for run {run}", hint="list runs with `corral audit runs`")
        )
    if as_json:
        _print_json({"run_id": run, "counts": counts(entries), "entries": [e.model_dump() for e in entries]})
        return
    render(entries, out, details=details)
    summary = ", ".join(f"{k} {v}" for k, v in counts(entries).items())
    out.print(f"[bold]{len(entries)} events[/bold]: {summary}", highlight=False)


@app.command()
def verify(
    run: Annotated[str | None, typer.Argument(help="The run id.")] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Verify every run in the store.")] = False,
    file: Annotated[
        Path | None, typer.Option("--file", help="Verify an exported JSONL file, offline.")
    ] = None,
    strict: Annotated[bool, typer.Option(help="Fail on events after the last checkpoint.")] = False,
    store: UrlOption = None,
    team: TeamOption = None,
    repo: ScopeRepoOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Check the hash chain and checkpoints; name the first edited, deleted, inserted or reordered event."""
    if (run is not None) + all_runs + (file is not None) != 1:
        err.print("give exactly one of RUN, --all or --file")
        raise typer.Exit(2)
    reports: list[VerifyReport]
    if file is not None:
        try:
            from corral.audit.blobs import BlobStore
            from corral.audit.verify import verify_file
            from corral.settings import load_settings

            reports = verify_file(file, blobs=BlobStore(load_settings().home / "blobs"), strict=strict)
        except CorralError as exc:
            _fail(exc)
    else:
        with _audit(store, team, repo) as scoped:
            ids = [r.run_id for r in scoped.log.runs()] if all_runs else [scoped.run_id(run or "")]
            reports = [scoped.log.verify(i, strict=strict) for i in ids]
    if as_json:
        _print_json([r.model_dump() | {"first": r.first.model_dump() if r.first else None} for r in reports])
    else:
        from rich.markup import escape

        from corral.display import visible

        for r in reports:
            style = "green" if r.ok else "bold red"
            out.print(f"[{style}]{escape(visible(r.summary()))}[/{style}]", highlight=False)
            for p in r.problems[1:20]:
                out.print(f"  also: {escape(visible(str(p)))}", highlight=False)
            for w in r.warnings[:5]:
                out.print(f"  [yellow]warning:[/yellow] {escape(visible(str(w)))}", highlight=False)
    if not reports or not all(r.ok for r in reports):
        raise typer.Exit(1)


@app.command()
def export(
    run: Annotated[str, typer.Argument(help="The run id (or a unique prefix), or an audit chain id.")],
    fmt: Annotated[str, typer.Option("--format", help="Export format (jsonl).")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default stdout).")
    ] = None,
    cassette: Annotated[
        Path | None,
        typer.Option(
            "--cassette", help="Write the run's model exchanges as a cassette the scripted model plays."
        ),
    ] = None,
    store: UrlOption = None,
    team: TeamOption = None,
    repo: ScopeRepoOption = None,
) -> None:
    """Write the run's stored events and checkpoints as JSONL; `corral audit verify --file` re-checks it.

    With --cassette FILE, write its model exchanges instead (`corral run --playbook FILE` plays it)."""
    if cassette is not None:
        from corral.model.cassette import Cassette

        with _audit(store, team, repo) as scoped:
            run_id = scoped.run_id(run)
            recorded = Cassette.from_events(scoped.log.read(run_id), run_id)
        recorded.dump(cassette)
        err.print(
            f"wrote {len(recorded.exchanges)} exchanges and {len(recorded.tool_results)} tool results "
            f"to {cassette}",
            highlight=False,
        )
        return
    if fmt != "jsonl":
        err.print(f"unknown format {fmt!r}: only jsonl is supported")
        raise typer.Exit(2)
    with _audit(store, team, repo) as scoped:
        lines = scoped.log.export(scoped.run_id(run))
    from corral.display import json_line

    text = "\n".join(json_line(line) for line in lines) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        err.print(f"wrote {len(lines)} records to {output}", highlight=False)
