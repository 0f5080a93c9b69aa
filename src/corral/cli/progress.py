"""Live progress for `corral run`: one line per step, with elapsed time; or JSON lines with --json."""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape

from corral.display import json_text, visible
from corral.events import (
    CheckResult,
    CommitMade,
    Event,
    GatewayDecision,
    ModelRefused,
    RunCreated,
    RunFinished,
    RunPhase,
    SandboxSelfTest,
    ShellCommand,
    ToolCall,
    ToolDenied,
    event_payload,
)


def _short(text: str, width: int = 90) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def describe_tool(event: ToolCall) -> str:
    data = event.input
    for key in ("command", "file_path", "pattern", "path", "url"):
        if isinstance(data.get(key), str):
            return f"{event.tool_name} {_short(str(data[key]))}"
    return event.tool_name


class ProgressPrinter:
    """Observer that renders run events for a person (stderr) or as JSON lines (stdout)."""

    def __init__(self, console: Console, *, json_lines: bool = False) -> None:
        self._console = console
        self._json = json_lines
        self._start = time.monotonic()

    def message(self, text: str) -> None:
        if not self._json:
            self._line(f"[dim]{escape(text)}[/dim]")

    def _line(self, text: str) -> None:
        # `text` is markup we wrote around agent-written fields: none of it may act on the terminal.
        self._console.print(
            f"[dim]{time.monotonic() - self._start:7.1f}s[/dim]  {visible(text)}", highlight=False
        )

    def __call__(self, event: Event) -> None:
        if self._json:
            print(json_text(event_payload(event), indent=None), flush=True)
            return
        match event:
            case RunCreated() if event.dirty_paths:
                listed = ", ".join(event.dirty_paths[:8]) + (" …" if len(event.dirty_paths) > 8 else "")
                self._line(
                    f"[yellow]warning:[/yellow] uncommitted changes are not included "
                    f"(the run starts from {event.base_commit[:10]}): {escape(listed)}"
                )
            case RunPhase():
                why = f" [dim]({escape(event.reason)})[/dim]" if event.reason else ""
                self._line(f"[bold cyan]{event.to_phase}[/bold cyan]{why}")
            case SandboxSelfTest():
                verdict = "[green]passed[/green]" if event.passed else "[red]FAILED[/red]"
                self._line(f"egress self-test {verdict}: interfaces {', '.join(event.interfaces)}")
            case ToolCall():
                self._line(f"  [yellow]→[/yellow] {escape(describe_tool(event))}")
            case ShellCommand():
                colour = "green" if event.exit_code == 0 else "red"
                self._line(f"    [{colour}]exit {event.exit_code}[/{colour}]")
            case ToolDenied():
                self._line(f"    [red]denied[/red] {escape(event.reason)}")
            case GatewayDecision(allowed=False):
                self._line(f"    [red]gateway denied[/red] {escape(event.tool_name)}: {escape(event.reason)}")
            case ModelRefused():
                self._line(f"  [red]model refused[/red] {escape(event.reason)}")
            case CommitMade():
                self._line(f"committed {event.commit[:10]} on {event.branch} ({len(event.files)} files)")
            case CheckResult():
                verdict = (
                    "[green]passed[/green]" if event.passed else f"[red]failed (exit {event.exit_code})[/red]"
                )
                self._line(f"checks `{escape(event.command)}` {verdict}")
            case RunFinished():
                colour = "green" if event.phase == "awaiting_approval" else "red"
                why = f": {escape(event.reason)}" if event.reason else ""
                took = event.duration_ms / 1000
                self._line(f"finished [bold {colour}]{event.phase}[/bold {colour}] in {took:.1f}s{why}")
            case _:
                pass
