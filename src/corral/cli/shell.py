"""`corral shell`: the interactive Claude Code TUI in a run sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from corral.cli import RepoOption, _services, err, out


def register(app: typer.Typer) -> None:
    @app.command()
    def shell(
        repo: RepoOption = Path("."),
        task: Annotated[
            str | None, typer.Option(help="The first prompt, as if typed (the commit message names it).")
        ] = None,
        playbook: Annotated[
            Path | None,
            typer.Option(help="Play this scripted-model playbook instead of calling a live model."),
        ] = None,
        resume: Annotated[
            str | None,
            typer.Option(help="Reopen this run (awaiting approval) with its conversation restored."),
        ] = None,
    ) -> None:
        """Open the real Claude Code TUI in a sandbox hardened as `corral run`'s, with every tool call
        decided by corral's policy and audited, and every prompt you type in the audit.

        The session ends with /exit, Ctrl-D or closing the terminal; then its change is committed on
        corral/<run-id>, checked in a fresh sandbox and left awaiting approval (no change: no_changes).
        """
        from corral.shell.session import ShellOrchestrator, ShellRequest, require_terminal

        require_terminal()  # before anything is created
        services = _services(lambda message: err.print(message, highlight=False), repo=repo)
        try:
            request = ShellRequest(repo=repo, task=task or "", playbook=playbook, resume=resume)
            run_id = ShellOrchestrator(services).open(request)
            record = services.find_run(run_id)
        finally:
            services.close()
        out.print(f"\nsession [bold]{record.run_id}[/bold]: {record.phase}", highlight=False)
        if record.failure_reason:
            out.print(f"  reason: {record.failure_reason}", highlight=False)
        if record.diffstat:
            out.print("\n".join("    " + line for line in record.diffstat.splitlines()), highlight=False)
        if record.checks_passed is not None:
            out.print(f"  checks: {'passed' if record.checks_passed else 'failed'}")
        out.print(f"  see: corral show {record.run_id} | corral audit show {record.run_id}", highlight=False)
        if record.phase == "awaiting_approval":
            out.print(f"  continue the conversation: corral shell --resume {record.run_id}", highlight=False)
        if record.phase not in ("awaiting_approval", "no_changes"):
            raise typer.Exit(1)
