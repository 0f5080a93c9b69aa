"""The regression report: JSON for machines, one self-contained HTML page for people.

The page has no script, no stylesheet link, no font and no image fetch: an inline SVG plots each
task's pass rate on both sides (regressions first), and tables give the intervals and the cost and
latency deltas. Everything the agent wrote (task texts, failure reasons) is escaped.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from corral.audit.redact import process_redactor
from corral.regress.stats import describe
from corral.regress.suite import EpochScore, SuiteResult, TaskResult

_ROW = 22
_WIDTH = 640
_LABEL = 260


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def deltas(results: list[TaskResult]) -> dict[str, Any]:
    """Mean per-epoch cost, wall time, tokens and tool calls on each side, and their differences."""
    sides: dict[str, list[EpochScore]] = {
        "baseline": [s for r in results for s in r.baseline],
        "candidate": [s for r in results for s in r.candidate],
    }
    out: dict[str, Any] = {}
    for metric in (
        "cost_usd",
        "wall_s",
        "input_tokens",
        "output_tokens",
        "tool_calls",
        "denied",
        "diff_lines",
    ):
        base = _mean([float(getattr(s, metric)) for s in sides["baseline"]])
        cand = _mean([float(getattr(s, metric)) for s in sides["candidate"]])
        out[metric] = {
            "baseline": round(base, 4),
            "candidate": round(cand, 4),
            "delta": round(cand - base, 4),
        }
    same = [s.same_files for s in sides["candidate"] if s.same_files is not None]
    out["same_files_rate"] = round(sum(same) / len(same), 4) if same else None
    return out


def report_json(suite: SuiteResult) -> dict[str, Any]:
    by_key = {r.task.key: r for r in suite.results}
    ordered = describe({k: r.outcome() for k, r in by_key.items()})
    return {
        **suite.summary(),
        "deltas": deltas(suite.results),
        "per_task": [
            {
                "task": o.task,
                "project": o.project,
                "decision": by_key[o.task].task.decision,
                "baseline_rate": o.baseline_rate,
                "candidate_rate": o.candidate_rate,
                "difference": o.difference,
                "baseline": [s.__dict__ for s in by_key[o.task].baseline],
                "candidate": [s.__dict__ for s in by_key[o.task].candidate],
            }
            for o in ordered
        ],
    }


def _svg(per_task: list[dict[str, Any]]) -> str:
    height = _ROW * len(per_task) + 30
    span = _WIDTH - _LABEL - 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
        f'role="img" aria-label="per-task pass rates">',
        f'<text x="{_LABEL}" y="14" font-size="11">0</text>',
        f'<text x="{_LABEL + span - 10}" y="14" font-size="11">1</text>',
    ]
    for i, row in enumerate(per_task):
        y = 30 + i * _ROW
        colour = "#b00020" if row["difference"] < 0 else ("#1b7f3b" if row["difference"] > 0 else "#555")
        label = html.escape(row["task"][-40:])
        base_x = _LABEL + row["baseline_rate"] * span
        cand_x = _LABEL + row["candidate_rate"] * span
        parts.append(f'<text x="4" y="{y + 4}" font-size="11" fill="{colour}">{label}</text>')
        parts.append(f'<line x1="{_LABEL}" y1="{y}" x2="{_LABEL + span}" y2="{y}" stroke="#ddd"/>')
        parts.append(
            f'<line x1="{base_x:.1f}" y1="{y}" x2="{cand_x:.1f}" y2="{y}" '
            f'stroke="{colour}" stroke-width="3"/>'
        )
        parts.append(f'<circle cx="{base_x:.1f}" cy="{y}" r="4" fill="#888"><title>baseline</title></circle>')
        parts.append(
            f'<circle cx="{cand_x:.1f}" cy="{y}" r="5" fill="{colour}"><title>candidate</title></circle>'
        )
    parts.append("</svg>")
    return "".join(parts)


def report_html(data: dict[str, Any]) -> str:
    e = html.escape
    analysis = data.get("analysis") or {}
    verdict = str(data["verdict"]) + (" (partial: interrupted)" if data["partial"] else "")
    rows = []
    for key in ("baseline_rate", "candidate_rate", "difference", "p_value", "mde", "margin"):
        if key in analysis:
            rows.append(f"<tr><th>{e(key)}</th><td>{float(analysis[key]):.4f}</td></tr>")
    for key in ("baseline_interval", "candidate_interval", "difference_interval"):
        if key in analysis:
            low, high = analysis[key]
            rows.append(f"<tr><th>{e(key)}</th><td>[{low:.4f}, {high:.4f}]</td></tr>")
    for key in ("pass_at_k", "pass_hat_k"):
        for k, value in (analysis.get(key) or {}).items():
            rows.append(f"<tr><th>{e(key)} k={e(k)}</th><td>{value:.4f}</td></tr>")
    delta_rows = "".join(
        f"<tr><th>{e(m)}</th><td>{v['baseline']}</td><td>{v['candidate']}</td><td>{v['delta']:+}</td></tr>"
        for m, v in data["deltas"].items()
        if isinstance(v, dict)
    )
    tasks = "".join(
        f"<tr><td>{e(t['task'])}</td><td>{e(t['decision'])}</td><td>{t['baseline_rate']:.2f}</td>"
        f"<td>{t['candidate_rate']:.2f}</td><td>{t['difference']:+.2f}</td>"
        f"<td>{e('; '.join(s['reason'] for s in t['candidate'] if s['reason'])[:300])}</td></tr>"
        for t in data["per_task"]
    )
    regressions = "".join(f"<li>{e(t)}</li>" for t in analysis.get("regressions", ())) or "<li>none</li>"
    skipped = (
        "".join(f"<li>{e(s['task'])}: {e(s['reason'])}</li>" for s in data["skipped"]) or "<li>none</li>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>corral regress {e(data["candidate"])}: {e(verdict)}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:60em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}</style>
</head><body>
<h1>{e(data["candidate"])} against {e(data["baseline"])}: {e(verdict)}</h1>
<p>{e(str(analysis.get("reason", "nothing to compare")))}</p>
<p>{data["tasks"]} task(s), test: {e(str(analysis.get("test", "")))};
baseline from {e(data["baseline_source"])};
suite {e(data["suite_id"])}, {data["wall_s"]} s.</p>
<h2>Regressions</h2><ol>{regressions}</ol>
<h2>Per-task pass rates (grey: baseline, coloured: candidate)</h2>
{_svg(data["per_task"])}
<h2>Statistics</h2><table>{"".join(rows)}</table>
<h2>Cost and latency per epoch</h2>
<table><tr><th></th><th>baseline</th><th>candidate</th><th>delta</th></tr>{delta_rows}</table>
<h2>Tasks</h2><table><tr><th>task</th><th>decision</th><th>baseline</th><th>candidate</th>
<th>difference</th><th>candidate failures</th></tr>{tasks}</table>
<h2>Skipped</h2><ul>{skipped}</ul>
</body></html>
"""


def write_report(suite: SuiteResult, directory: Path) -> dict[str, str]:
    """Write `<suite>.json` and `<suite>.html` under `directory`; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    # Redacted before it is escaped into HTML: tasks and reasons quote what runs did.
    data = process_redactor().redact(report_json(suite))
    json_path = directory / f"{suite.suite_id}.json"
    html_path = directory / f"{suite.suite_id}.html"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    html_path.write_text(report_html(data), encoding="utf-8")
    return {"json": str(json_path), "html": str(html_path)}
