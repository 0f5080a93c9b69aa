"""The `corral` command: a thin Typer layer over the library. No logic of its own."""

from __future__ import annotations

import faulthandler
import importlib
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape

from corral.errors import CorralError

app = typer.Typer(
    name="corral",
    help="Run Claude Code on real repositories, each run in a locked-down container, "
    "with the model behind a host proxy and every action in an audit log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@app.callback()
def _redact_output(ctx: typer.Context) -> None:
    # Every command's stdout, stderr and logging go through the process redactor (corral.outputs).
    from corral.outputs import redact_process_output

    ctx.call_on_close(redact_process_output())


JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")]
RepoOption = Annotated[
    Path, typer.Option("--repo", help="The git repository to work on.", show_default="current directory")
]
TeamOption = Annotated[
    str | None,
    typer.Option(
        "--team",
        help="The team to act in (default: CORRAL_TEAM, else the repository's corral.toml, else 'default').",
    ),
]
ScopeRepoOption = Annotated[
    Path | None,
    typer.Option(
        "--repo",
        help="The repository whose corral.toml gives the team and stores.",
        show_default="the repository of the current directory",
    ),
]


def emit_json(data: Any) -> None:
    from corral.display import json_text

    print(json_text(data))


def _services(progress: Any = None, *, team: str | None = None, repo: Path | None = None) -> Any:
    """The one wiring for a command, scoped to the team that `corral.scope` picks."""
    from corral.scope import resolve_scope
    from corral.services import Services
    from corral.settings import load_settings

    settings = load_settings()
    return Services(settings, progress, resolve_scope(settings, team, repo))


def sigterm_as_interrupt() -> None:
    """SIGTERM cleans up as Ctrl-C does (a long command's `finally` runs and records its end)."""
    import signal

    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _register_subcommands() -> None:
    from corral.cli import commands, delivery, fleet, regress, runs, server, shell

    runs.register(app)
    server.register(app)
    runs.register_review(app)
    delivery.register(app)
    commands.register(app)
    shell.register(app)
    regress.register(app)
    fleet.register(app)
    for module_name, name, help_text in (
        ("corral.cli.image", "image", "Build and list the sandbox images."),
        ("corral.cli.audit", "audit", "Read, verify and export the audit log."),
        ("corral.cli.prefs", "prefs", "Learned preferences: list, add, retire, supersede."),
        ("corral.cli.gateway", "gateway", "The MCP tool gateway: serve it, dry-run grants."),
        ("corral.cli.delivery", "deploy", "Deployments: list, promote (needs an approval), roll back."),
        (
            "corral.cli.model",
            "model",
            "Pinned models: pin, history, promote (gated on a passing regression).",
        ),
        ("corral.cli.server", "user", "Users of corral server: add them, give them API tokens."),
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            # Skipping a broken group would silently drop it from --help: list it, and fail when used.
            _register_broken_group(name, module_name, exc)
            continue
        app.add_typer(module.app, name=name, help=help_text)


def _register_broken_group(name: str, module_name: str, cause: ImportError) -> None:
    @app.command(
        name,
        help=f"(unavailable: {cause})",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def unavailable() -> None:
        raise CorralError(
            f"the `corral {name}` commands cannot be loaded: {module_name} failed to import: {cause}",
            hint="reinstall corral with its dependencies (pip install -e . or make demo), then retry",
        )


_register_subcommands()


def main() -> None:
    """Entry point: turn corral's errors into a clear message and exit code 2, Ctrl-C into 130."""
    # `kill -USR1 PID` prints every thread's stack to stderr (code locations only, never values): how
    # an operator, or a test, sees where a corral that will not stop is waiting.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # A parent can hand its signal mask down with SIGINT or SIGTERM blocked (a supervisor, a CI runner,
    # a thread that forked mid-critical-section). corral promises that both stop it cleanly, so it
    # takes them back; an ignored SIGINT (a background job's) is a choice and stays ignored.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        # Outside standalone mode Typer returns, rather than raises, the code of a `typer.Exit`
        # (Ctrl-C included, as 130), so pass it on as the process's exit status.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            if code == 130:
                err.print("interrupted: the run was recorded as failed and its container removed")
            sys.exit(code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CorralError as exc:
        from corral.display import visible

        # A message can quote agent-written text (a file name, a failure reason): never raw.
        err.print(f"[bold red]error:[/bold red] {escape(visible(exc.message))}", highlight=False)
        if exc.hint:
            err.print(f"[yellow]hint:[/yellow] {escape(visible(exc.hint))}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted: the run was recorded as failed and its container removed")
        sys.exit(130)
