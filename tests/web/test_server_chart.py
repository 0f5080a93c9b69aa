"""The run page's time chart covers the whole run, not the timeline's page: a lane for each requested
model and each tool, each bar where its request or call happened on the run's clock (up to its
run.finished), its size bounded however long the run, and agent-chosen names shown as text."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from corral import events as ev
from corral.audit.chain import EventRow
from corral.web.chart import MAX_MODEL_LANES, MAX_TOOL_LANES, OTHER, ChartCache, chart, svg
from corral.web.window import PAGE
from tests.web.conftest import HOSTILE, Site

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _row(seq: int, kind: str, at: float, **data: object) -> EventRow:
    ts = (T0 + timedelta(seconds=at)).isoformat()
    return EventRow("r1", seq, kind, ts, f"h{seq}", json.dumps({"kind": kind, "seq": seq, "ts": ts, **data}))


def _call(seq: int, kind: str, at: float, call_id: str, tool: str = "Bash") -> EventRow:
    return _row(seq, kind, at, **{"gen_ai.tool.name": tool, "gen_ai.tool.call.id": call_id})


def test_bars_pair_requests_and_calls_by_id_on_the_runs_clock() -> None:
    rows = [
        _row(1, "run.created", 0.0),
        _row(2, "model.request", 1.0, exchange_id="x1", **{"gen_ai.request.model": "m"}),
        _call(3, "tool.call", 1.5, "a"),
        _row(4, "model.response", 2.0, exchange_id="x1"),
        _call(5, "tool.call", 2.5, "b", tool="Read"),
        _call(6, "tool.result", 3.0, "a"),
        _call(7, "tool.result", 4.5, "b", tool="Read"),
        _row(
            8, "model.request", 5.0, exchange_id="x2", **{"gen_ai.request.model": "m"}
        ),  # never answered: not drawn
        _call(9, "tool.result", 5.5, "never-called"),  # no call: not drawn
        _row(10, "run.finished", 10.0),
        _row(11, "approval.granted", 86_400.0),  # the next day: the review's time, not the run's
    ]
    drawn = chart(rows)
    assert drawn.span == 10.0  # from the run's first event to its run.finished, not the first bar's
    assert chart(rows[:9]).span == 5.5  # a live run: to its newest event
    lanes = {lane.label: [(b.start, b.end) for b in lane.bars] for lane in drawn.lanes}
    assert lanes == {"model: m": [(1.0, 2.0)], "tool: Bash": [(1.5, 3.0)], "tool: Read": [(2.5, 4.5)]}
    assert list(lanes) == ["model: m", "tool: Read", "tool: Bash"]  # models, then tools by busy time
    assert chart([]).empty and chart(rows[:1]).empty


def test_bars_closer_than_a_pixel_are_drawn_as_one_and_far_ones_apart() -> None:
    rows = [_row(1, "run.created", 0.0)]
    for i in range(100):  # 100 calls within 0.1 s: far under a pixel apart on a 10 s axis
        rows += [
            _call(2 * i + 2, "tool.call", 1 + i / 1000, f"c{i}"),
            _call(2 * i + 3, "tool.result", 1 + i / 1000, f"c{i}"),
        ]
    rows += [
        _call(300, "tool.call", 8.0, "late"),
        _call(301, "tool.result", 8.5, "late"),
        _row(302, "run.finished", 10.0),
    ]
    drawn = svg(chart(rows))
    rects = re.findall(r"<rect [^>]*><title>([^<]*)</title>", drawn)
    assert len(rects) == 2
    assert rects[0].startswith("tool: Bash: 100 calls") and rects[1].startswith(
        "tool: Bash: 500.0 ms, +8.000 s"
    )
    assert "tool: Bash ×101" in drawn  # the lane counts every call, merged or not


def test_a_long_run_with_many_tool_names_stays_bounded_and_escapes_the_names() -> None:
    rows = [_row(1, "run.created", 0.0)]
    for i in range(3000):
        tool = f"mcp__{HOSTILE}__{i % 40}"
        rows += [
            _call(2 * i + 2, "tool.call", i * 0.01, f"c{i}", tool),
            _call(2 * i + 3, "tool.result", i * 0.01 + 0.005, f"c{i}", tool),
        ]
    drawn_chart = chart(rows)
    for i in range(10):  # ten model names, as Claude Code's requests named them
        rows += [
            _row(
                7000 + 2 * i,
                "model.request",
                i,
                exchange_id=f"x{i}",
                **{"gen_ai.request.model": f"m{HOSTILE}{i}"},
            ),
            _row(7001 + 2 * i, "model.response", i + 0.5, exchange_id=f"x{i}"),
        ]
    drawn_chart = chart(rows)
    labels = [lane.label for lane in drawn_chart.lanes]
    assert len(labels) == MAX_MODEL_LANES + 1 + MAX_TOOL_LANES + 1
    assert labels[MAX_MODEL_LANES] == f"model: {OTHER}" and labels[-1] == f"tool: {OTHER}"
    assert sum(len(lane.bars) for lane in drawn_chart.lanes) == 3000 + 10  # nothing lost to the caps
    drawn = svg(drawn_chart)
    assert drawn.count("<rect ") <= len(labels) * 900  # at most one bar per pixel and lane
    assert "<script>" not in drawn and "<img" not in drawn and "\x1b" not in drawn


def test_the_run_page_charts_every_call_of_a_run_longer_than_one_timeline_page(site: Site) -> None:
    recorder = site.services.audit().for_run(site.run_id)
    calls = PAGE  # with the fixture's events, the calls run past the first timeline page
    try:
        for i in range(calls):
            call = {"gen_ai.tool.name": "Edit", "gen_ai.tool.call.id": f"e{i}"}
            recorder.emit(ev.ToolCall.model_validate({**call, "input": {}}))
            recorder.emit(ev.ToolResult.model_validate({**call, "output": "ok"}))
    finally:
        recorder.close()
    site.sign_in("vera")
    first_page = site.client.get(f"/runs/{site.run_id}").text
    assert f"events 1–{PAGE} of" in first_page  # the timeline shows one page ...
    chart_part = first_page[first_page.index('class="gantt"') : first_page.index("</svg>")]
    assert (
        f"tool: Edit ×{calls}" in chart_part and "tool: Bash ×1" in chart_part and "model: m ×1" in chart_part
    )
    last_page = site.client.get(f"/runs/{site.run_id}?after={PAGE}").text
    assert last_page[last_page.index('class="gantt"') : last_page.index("</svg>")] == chart_part


def test_the_chart_is_drawn_again_once_the_run_has_a_new_event_and_old_runs_are_forgotten() -> None:
    cache = ChartCache(size=2)
    rows = [_row(1, "run.created", 0.0), _call(2, "tool.call", 1.0, "a"), _call(3, "tool.result", 2.0, "a")]
    first = cache.svg("r1", rows)
    assert "tool: Bash ×1" in first and cache.svg("r1", rows) is first  # same head: remembered
    rows += [_call(4, "tool.call", 3.0, "b", tool="Read"), _call(5, "tool.result", 4.0, "b", tool="Read")]
    kept = cache.svg("r1", rows)
    assert "tool: Read ×1" in kept and kept is not first  # a new event: drawn again
    assert cache.svg("r1", rows) is kept
    assert cache.svg("r2", []) == "" and cache.svg("r3", rows[:1]) == ""  # nothing to draw yet
    redrawn = cache.svg("r1", rows)  # r1 was the least recently viewed of three runs: forgotten
    assert redrawn == kept and redrawn is not kept
