"""What a run's page shows, computed on the server: the diff, the commits, the timeline, the time chart.

Everything here can carry what an agent wrote. Pygments escapes what it highlights; the rest goes to
templates as plain strings under autoescape. Terminal escapes are made visible (`corral.display`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from corral import events as ev
from corral.audit.redact import process_redactor
from corral.audit.timeline import Entry
from corral.display import visible

if TYPE_CHECKING:
    from corral.events import AnyEvent
    from corral.state.models import RunRecord

DIFF_LIMIT = 400_000


def _git(repo: str, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", repo, *args],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def branch_diff(run: RunRecord) -> str:
    if not run.base_commit or not run.branch or not Path(run.repo).is_dir():
        return ""
    return _git(run.repo, "diff", "--no-color", "--no-ext-diff", f"{run.base_commit}...{run.branch}", "--")[
        :DIFF_LIMIT
    ]


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str
    author: str


def commits(run: RunRecord) -> list[Commit]:
    if not run.base_commit or not run.branch or not Path(run.repo).is_dir():
        return []
    out = _git(run.repo, "log", "--format=%H%x1f%s%x1f%an", f"{run.base_commit}..{run.branch}", "--")
    found = []
    for line in out.splitlines():
        sha, _, rest = line.partition("\x1f")
        subject, _, author = rest.partition("\x1f")
        found.append(Commit(sha, visible(subject), visible(author)))
    return found


def highlight_diff(diff: str) -> str:
    """HTML of the diff; pygments escapes every character of the source it is given."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import DiffLexer

    # Redacted before it is highlighted: in the escaped HTML a value may no longer read as itself.
    text = visible(process_redactor().redact_text(diff))
    return str(highlight(text, DiffLexer(), HtmlFormatter(nowrap=True)))


def shown(entries: list[Entry]) -> list[Entry]:
    return [
        e.model_copy(update={"summary": visible(e.summary), "detail": visible(e.detail)}) for e in entries
    ]


def deployment_url(events: list[AnyEvent]) -> str:
    """The URL of the run's newest staged or promoted deployment (a deploy target reported it)."""
    urls = [e.url for e in events if isinstance(e, ev.DeployStaged | ev.DeployPromoted) and e.url]
    return visible(urls[-1]) if urls else ""


@dataclass(frozen=True)
class TurnDiff:
    seq: int
    path: str
    html: str
    turn: int | None = None
    """The model turn that asked for the edit (None: no model response the proxy saw did)."""


def turn_diffs(events: list[AnyEvent], turns: Mapping[str, int]) -> list[TurnDiff]:
    """Each file edit's diff, with the turn (see `corral.web.window.tool_turns`) that made it."""
    return [
        TurnDiff(e.seq, visible(e.path), highlight_diff(e.diff), turns.get(e.tool_call_id))
        for e in events
        if isinstance(e, ev.FileEdit) and e.diff
    ]


@dataclass(frozen=True)
class Bar:
    label: str
    lane: str
    start: float
    end: float


def bars(events: list[AnyEvent], since: str = "") -> list[Bar]:
    """Each model request (request → response by exchange id) and tool call (call → result by id),
    in seconds from `since` (the run's first event's ISO time; default: the first of `events`)."""
    started: dict[tuple[str, str], tuple[datetime, str]] = {}
    found: list[Bar] = []
    origin = datetime.fromisoformat(since) if since else min((e.ts for e in events), default=None)
    if origin is None or not events:
        return []
    for e in sorted(events, key=lambda x: x.seq):
        if isinstance(e, ev.ModelRequest):
            started[("model", e.exchange_id)] = (e.ts, e.request_model)
        elif isinstance(e, ev.ModelResponse) and ("model", e.exchange_id) in started:
            ts, label = started.pop(("model", e.exchange_id))
            found.append(
                Bar(visible(label), "model", (ts - origin).total_seconds(), (e.ts - origin).total_seconds())
            )
        elif isinstance(e, ev.ToolCall):
            started[("tool", e.tool_call_id)] = (e.ts, e.tool_name)
        elif isinstance(e, ev.ToolResult) and ("tool", e.tool_call_id) in started:
            ts, label = started.pop(("tool", e.tool_call_id))
            found.append(
                Bar(visible(label), "tool", (ts - origin).total_seconds(), (e.ts - origin).total_seconds())
            )
    return found


def gantt_svg(items: list[Bar], width: int = 900) -> str:
    """An SVG chart of `items` on one time axis, from the first bar's start to the last one's end
    (seconds from the run's start); labels are escaped (they can be agent-chosen names)."""
    from html import escape

    row, left = 18, 140
    low = min((b.start for b in items), default=0.0)
    span = (max((b.end for b in items), default=0.0) - low) or 1.0
    scale = (width - left - 10) / span
    height = row * len(items) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gantt" width="{width}" height="{height}" '
        f'role="img" aria-label="where the run\'s time went">'
    ]
    for i, b in enumerate(items):
        y = i * row + 4
        x = left + (b.start - low) * scale
        w = max(1.0, (b.end - b.start) * scale)
        colour = "#5b8def" if b.lane == "model" else "#e0a030"
        name = escape(f"{b.lane}: {b.label}"[:22])
        tip = escape(f"{b.lane} {b.label}: {b.end - b.start:.3f}s at +{b.start:.3f}s")
        parts.append(f'<text x="2" y="{y + 12}" font-size="11">{name}</text>')
        rect = f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 4}" fill="{colour}">'
        parts.append(f"{rect}<title>{tip}</title></rect>")
    axis = row * len(items) + 20
    parts.append(f'<text x="{left}" y="{axis}" font-size="11">{_seconds(low) if low else "0 s"}</text>')
    parts.append(f'<text x="{width - 60}" y="{axis}" font-size="11">{_seconds(low + span)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.1f} ms"
