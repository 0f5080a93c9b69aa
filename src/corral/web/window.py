"""One page of a run's timeline: `PAGE` entries after a seq cursor, optionally of one group.

A long run's page must not parse and render every event: a 5,000-event run would spend most of a
second on it. The stored rows (cheap: index fields and the JSON text) say each event's kind, so the
window and the group counts come from them, and only what is shown is parsed: the window's rows,
the file edits (the per-turn diffs) and the deploy events (the URL). A kind's group is constant
except for `gateway.call` (an incident read is "saw"), so `timeline.entry` decides it: once per kind
from one of its events, and for every gateway call.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral.audit.timeline import Entry, Section, entry, timeline
from corral.events import ToolCall, parse_event

if TYPE_CHECKING:
    from corral.audit.chain import EventRow
    from corral.events import AnyEvent

PAGE = 200
GROUPS: tuple[Section, ...] = ("saw", "decided", "did", "shipped", "run")
_PER_EVENT = frozenset({"gateway.call"})


@dataclass(frozen=True)
class Window:
    entries: list[Entry]
    events: list[AnyEvent]
    """The parsed events behind `entries`."""
    counts: dict[str, int]
    """Events per group in the whole run."""
    total: int
    group: str
    first: int
    """1-based position of the window's first entry among the run's (or the group's) events."""
    after_prev: int | None = None
    """The cursor of the previous page (None on the first page)."""
    after_next: int | None = None
    """The cursor of the next page (None on the last page)."""
    after_last: int | None = None
    """The cursor of the last page (None when this is it)."""
    at_tail: bool = True
    """Whether the window ends at the run's newest event (live rows may be appended)."""


def sections(rows: Sequence[EventRow]) -> list[str]:
    """Each row's group, parsing one event per kind (and each gateway call)."""
    by_kind: dict[str, str] = {}
    found = []
    for row in rows:
        known = by_kind.get(row.kind)
        if known is None:
            known = entry(parse_event(row.data)).section
            if row.kind not in _PER_EVENT:
                by_kind[row.kind] = known
        found.append(known)
    return found


def tool_turns(rows: Sequence[EventRow]) -> dict[str, int]:
    """Each tool_use id of the run's model responses, to the turn that asked for it: the how-manyth
    model response of the run, 1-based (count_tokens answers aside; a small model's answers count
    too). JSON only, no model validation."""
    turns: dict[str, int] = {}
    turn = 0
    for row in rows:
        if row.kind == "model.response":
            data = json.loads(row.data)
            if data.get("gen_ai.operation.name") == "count_tokens":
                continue
            turn += 1
            uses = data.get("tool_uses") or []
            turns.update((str(u.get("id", "")), turn) for u in uses if isinstance(u, dict))
    return turns


def window(
    rows: Sequence[EventRow],
    after: int,
    group: str,
    size: int = PAGE,
    issued: Mapping[str, int] | None = None,
) -> Window:
    """The page after seq `after`; `issued` is `tool_turns(rows)` if the caller has it already."""
    groups = sections(rows)
    counts = Counter(groups)
    picked = [r for r, g in zip(rows, groups, strict=True) if not group or g == group]
    start = next((i for i, r in enumerate(picked) if r.seq > after), len(picked))
    page = picked[start : start + size]
    events = [parse_event(r.data) for r in page]
    entries = timeline(events, match_model=False)
    issued = tool_turns(rows) if issued is None else issued
    entries = [
        e.model_copy(update={"model_issued": ev.tool_call_id in issued}) if isinstance(ev, ToolCall) else e
        for e, ev in zip(entries, events, strict=True)
    ]
    end = start + len(page)
    last_start = max(0, len(picked) - size)
    return Window(
        entries=entries,
        events=events,
        counts={g: counts.get(g, 0) for g in GROUPS},
        total=len(picked),
        group=group,
        first=start + 1,
        after_prev=None if start == 0 else (picked[start - size - 1].seq if start - size > 0 else 0),
        after_next=page[-1].seq if end < len(picked) else None,
        after_last=None if end >= len(picked) else (picked[last_start - 1].seq if last_start else 0),
        at_tail=end >= len(picked),
    )
