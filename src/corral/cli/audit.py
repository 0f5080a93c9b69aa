"""`corral audit {runs,tail,show,verify,export}`: a thin layer over corral.audit."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from corral.errors import CorralError, NotFound

if TYPE_CHECKING:
    from corral.audit.log import AuditLog
    from corral.audit.verify import VerifyReport

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
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


@contextmanager
def _audit(url: str | None) -> Iterator[AuditLog]:
    from corral.audit.log import AuditLog
    from corral.settings import load_settings

    try:
        audit = AuditLog.open(load_settings(), url, allow_offline=True, background=False)
    except CorralError as exc:
        _fail(exc)
    try:
        yield audit
    except CorralError as exc:
        _fail(exc)
    finally:
        audit.close()


def _fail(exc: CorralError) -> typer.Exit:
    err.print(f"[bold red]error:[/bold red] {exc.message}", highlight=False, markup=True)
    if exc.hint:
        err.print(f"[yellow]hint:[/yellow] {exc.hint}", highlight=False)
    raise typer.Exit(2)


@app.command("runs")
def runs_cmd(store: UrlOption = None, as_json: JsonFlag = False) -> None:
    """List the runs the audit store holds."""
    with _audit(store) as audit:
        runs = audit.runs()
    if as_json:
        _print_json([dataclasses.asdict(r) for r in runs])
        return
    for r in runs:
        out.print(f"{r.run_id}  {r.events:>6} events  {r.first_ts[:19]} → {r.last_ts[:19]}", highlight=False)


@app.command()
def tail(
    run: Annotated[str, typer.Argument(help="The run id.")],
    follow: Annotated[bool, typer.Option("--follow/--no-follow", help="Keep printing new events.")] = True,
    interval: Annotated[float, typer.Option(help="Seconds between polls while following.")] = 0.5,
    store: UrlOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Print a run's events as they arrive (from the store and the local spool); stops at run.finished."""
    from corral.audit.timeline import render, timeline
    from corral.events import parse_event

    last = 0
    with _audit(store) as audit:
        while True:
            rows = audit.rows(run, last)
            for row in rows:
                event = parse_event(row.data)
                if as_json:
                    print(row.data, flush=True)
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
    run: Annotated[str, typer.Argument(help="The run id.")],
    details: Annotated[bool, typer.Option("--details/--no-details", help="Show diffs and outputs.")] = True,
    store: UrlOption = None,
    as_json: JsonFlag = False,
) -> None:
    """The run's timeline: what the agent saw, decided, did, and what shipped."""
    from corral.audit.timeline import counts, render, timeline

    with _audit(store) as audit:
        events = audit.read(run)
    if not events:
        _fail(
            NotFound(f"the audit log has no events for run {run}", hint="list runs with `corral audit runs`")
        )
    entries = timeline(events)
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
        with _audit(store) as audit:
            ids = [r.run_id for r in audit.runs()] if all_runs else [run or ""]
            reports = [audit.verify(i, strict=strict) for i in ids]
    if as_json:
        _print_json([r.model_dump() | {"first": r.first.model_dump() if r.first else None} for r in reports])
    else:
        for r in reports:
            style = "green" if r.ok else "bold red"
            out.print(f"[{style}]{r.summary()}[/{style}]", highlight=False)
            for p in r.problems[1:20]:
                out.print(f"  also: {p}", highlight=False)
            for w in r.warnings[:5]:
                out.print(f"  [yellow]warning:[/yellow] {w}", highlight=False)
    if not reports or not all(r.ok for r in reports):
        raise typer.Exit(1)


@app.command()
def export(
    run: Annotated[str, typer.Argument(help="The run id.")],
    fmt: Annotated[str, typer.Option("--format", help="Export format (jsonl).")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default stdout).")
    ] = None,
    store: UrlOption = None,
) -> None:
    """Write the run's stored events and checkpoints as JSONL; `corral audit verify --file` re-checks it."""
    if fmt != "jsonl":
        err.print(f"unknown format {fmt!r}: only jsonl is supported")
        raise typer.Exit(2)
    with _audit(store) as audit:
        lines = audit.export(run)
    text = "\n".join(lines) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        err.print(f"wrote {len(lines)} records to {output}", highlight=False)
