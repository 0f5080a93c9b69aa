"""Where a run's time went, for the whole run: each model request and each tool call as a bar on one
time axis, a lane for each requested model and one for each tool, rendered on the server as SVG.

The chart reads every stored row of the run but parses only the four kinds it draws, and only the
fields it needs. Its size is bounded whatever the run's length: at most `MAX_MODEL_LANES` model and
`MAX_TOOL_LANES` tool lanes (the rest of each share one), and bars that fall within a pixel of each
other in a lane are drawn as one, so a lane holds at most one bar per pixel. Tool names and the
model names Claude Code asked for come from inside the sandbox: they are escaped and cut short.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corral.audit.chain import EventRow
from corral.display import visible

MAX_MODEL_LANES = 3
MAX_TOOL_LANES = 12
OTHER = "other"
CHART_KINDS = frozenset({"model.request", "model.response", "tool.call", "tool.result"})
_WIDTH, _LEFT, _ROW = 900, 190, 22


class _Ids(BaseModel):
    """The ids the chart pairs a model or tool event by (the rest of the stored JSON is skipped)."""

    model_config = ConfigDict(extra="ignore")

    exchange_id: str = ""
    request_model: str = Field("", alias="gen_ai.request.model")
    tool_name: str = Field("", alias="gen_ai.tool.name")
    tool_call_id: str = Field("", alias="gen_ai.tool.call.id")


@dataclass(frozen=True)
class Bar:
    start: float
    end: float


@dataclass
class Lane:
    name: str
    kind: str  # "model" or "tool"
    bars: list[Bar] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.kind}: {self.name}"

    @property
    def busy(self) -> float:
        return sum(b.end - b.start for b in self.bars)


@dataclass(frozen=True)
class Chart:
    lanes: list[Lane]
    span: float  # seconds from the run's first event to its run.finished (a live run: its last event)

    @property
    def empty(self) -> bool:
        return not any(lane.bars for lane in self.lanes)


def chart(rows: Iterable[EventRow]) -> Chart:
    """The run's lanes: model requests (request → response, by exchange id) and tool calls (call →
    result, by call id), in seconds from the run's first event. A start with no end is not drawn."""
    origin: datetime | None = None
    last: datetime | None = None
    finished: datetime | None = None
    open_spans: dict[tuple[str, str], tuple[float, str]] = {}
    lanes: dict[tuple[str, str], Lane] = {}
    for row in rows:
        when = _when(row.ts)
        if when is None:
            continue  # a malformed row is verification's to report, not the chart's
        origin, last = origin or when, when
        if row.kind == "run.finished" and finished is None:
            finished = when
        if row.kind not in CHART_KINDS:
            continue
        try:
            ids = _Ids.model_validate_json(row.data)
        except ValidationError:
            continue
        at = (when - origin).total_seconds()
        if row.kind == "model.request":
            open_spans[("model", ids.exchange_id)] = (at, ids.request_model)
        elif row.kind == "tool.call":
            open_spans[("tool", ids.tool_call_id)] = (at, ids.tool_name)
        else:
            key = ("model", ids.exchange_id) if row.kind == "model.response" else ("tool", ids.tool_call_id)
            begun = open_spans.pop(key, None)
            if begun is None:
                continue
            start, name = begun
            lane = lanes.setdefault((key[0], name), Lane(name, key[0]))
            lane.bars.append(Bar(start, max(start, at)))
    # The run's own time: up to its run.finished, not the review, merge and deploys days later.
    end = finished or last
    span = (end - origin).total_seconds() if origin is not None and end is not None else 0.0
    models = _capped([lane for lane in lanes.values() if lane.kind == "model"], MAX_MODEL_LANES)
    tools = _capped([lane for lane in lanes.values() if lane.kind == "tool"], MAX_TOOL_LANES)
    return Chart(models + tools, span)


def _capped(lanes: list[Lane], limit: int) -> list[Lane]:
    """The `limit` busiest lanes, busiest first, and one lane for the rest of their bars."""
    ranked = sorted(lanes, key=lambda lane: -lane.busy)
    if len(ranked) <= limit:
        return ranked
    rest = Lane(
        OTHER,
        ranked[0].kind,
        sorted((b for lane in ranked[limit:] for b in lane.bars), key=lambda b: b.start),
    )
    return [*ranked[:limit], rest]


def _when(ts: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(ts)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def svg(run_chart: Chart, width: int = _WIDTH) -> str:
    """The chart as an SVG element: one row per lane, labelled with its count and busy time, on an
    axis from the run's start to its `run.finished`; gaps are time spent in neither (corral's own
    work: the sandbox, the self-test, checks and commit, and Claude Code's between calls)."""
    lanes = [lane for lane in run_chart.lanes if lane.bars]
    span = run_chart.span or max((b.end for lane in lanes for b in lane.bars), default=0.0) or 1.0
    scale = (width - _LEFT - 10) / span
    height = _ROW * len(lanes) + 34
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gantt" width="{width}" height="{height}" '
        f'role="img" aria-label="where the run\'s time went">'
    ]
    for i, lane in enumerate(lanes):
        y = i * _ROW + 4
        label = f"{visible(lane.label)[:20]} ×{len(lane.bars)} · {_seconds(lane.busy)}"
        parts.append(f'<text x="2" y="{y + 13}" font-size="11">{escape(label)}</text>')
        colour = "#5b8def" if lane.kind == "model" else "#e0a030"
        for start, end, count, busy in _merged(lane.bars, scale):
            x, w = _LEFT + start * scale, max(1.0, (end - start) * scale)
            what = f"{count} calls, {_seconds(busy)} busy" if count > 1 else _seconds(busy)
            tip = escape(f"{visible(lane.label)[:200]}: {what}, +{start:.3f} s to +{end:.3f} s")
            rect = f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{_ROW - 6}" fill="{colour}">'
            parts.append(f"{rect}<title>{tip}</title></rect>")
    axis = _ROW * len(lanes) + 8
    parts.append(f'<line x1="{_LEFT}" y1="{axis}" x2="{width - 10}" y2="{axis}" stroke="#999"/>')
    for k in range(5):
        value = span * k / 4
        x = _LEFT + value * scale
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"
        tick = f'<text x="{x:.1f}" y="{axis + 16}" font-size="11" text-anchor="{anchor}">'
        parts.append(f"{tick}{_seconds(value)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _merged(bars: list[Bar], scale: float) -> list[tuple[float, float, int, float]]:
    """Bars closer than a pixel, as (start, end, how many, busy seconds): at most one per pixel."""
    merged: list[tuple[float, float, int, float]] = []
    gap = 1.0 / scale
    for bar in sorted(bars, key=lambda b: b.start):
        if merged and bar.start <= merged[-1][1] + gap:
            start, end, count, busy = merged[-1]
            merged[-1] = (start, max(end, bar.end), count + 1, busy + bar.end - bar.start)
        else:
            merged.append((bar.start, bar.end, 1, bar.end - bar.start))
    return merged


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.1f} ms" if value else "0 s"


class ChartCache:
    """Each run's chart SVG, remembered per chain head (event count and head hash), as
    `corral.web.verified` remembers its verification: a finished run's chart never changes, and a
    live run's is drawn again once it has a new event. At most `size` runs, the least recently
    viewed forgotten first."""

    def __init__(self, size: int = 32) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._svgs: OrderedDict[str, tuple[tuple[int, str], str]] = OrderedDict()

    def svg(self, run_id: str, rows: Sequence[EventRow]) -> str:
        """The run's chart as SVG, or "" when it has no model request or tool call yet."""
        head = (len(rows), rows[-1].hash if rows else "")
        with self._lock:
            known = self._svgs.get(run_id)
            if known is not None and known[0] == head:
                self._svgs.move_to_end(run_id)
                return known[1]
        drawn = chart(rows)
        text = "" if drawn.empty else svg(drawn)
        with self._lock:
            self._svgs[run_id] = (head, text)
            self._svgs.move_to_end(run_id)
            while len(self._svgs) > self._size:
                self._svgs.popitem(last=False)
        return text
