"""What a run's page shows, computed on the server: the diff, the commits, the timeline (the time chart
is `corral.web.chart`).

Everything here can carry what an agent wrote. Pygments escapes what it highlights; the rest goes to
templates as plain strings under autoescape. Terminal escapes are made visible (`corral.display`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
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
