"""What a suite leaves behind and what a promotion needs: the summary rows, and the promote rule.

A promotion pins the candidate as the project's model only when a complete, passing suite of that
candidate on that project is newer than `[regress] max_age`; the new pin records who promoted it and
which suite allowed it. Everything else of the pin (small model, CLI, tool surface) carries over.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from corral.config import Config, duration_seconds
from corral.errors import GateRefused
from corral.regress.suite import SuiteResult
from corral.state.db import StateStore
from corral.state.models import ModelPin, RegressionRecord


def record_suite(state: StateStore, suite: SuiteResult) -> list[RegressionRecord]:
    """One summary row per project the suite covered (the verdict is the suite's)."""
    projects = sorted({r.task.project for r in suite.results}) or [suite.options.project or ""]
    summary = suite.summary()
    epochs = suite.analysis.epochs if suite.analysis else 0
    return [
        state.record_regression(
            project,
            suite.options.candidate,
            suite.baseline_model,
            suite.verdict,
            tasks=len(suite.results),
            epochs=epochs,
            summary=summary,
            partial=suite.partial,
            report_path=suite.report_paths.get("html", ""),
            created_by=suite.options.created_by,
        )
        for project in projects
        if project
    ]


def promote(
    state: StateStore, project: str, model: str, config: Config, *, actor: str, reason: str = ""
) -> ModelPin:
    max_age = config.regress.max_age
    newer_than = datetime.now(UTC) - timedelta(seconds=duration_seconds(max_age))
    passing = state.latest_passing_regression(project, model, newer_than)
    if passing is None:
        seen = state.list_regressions(project, model)
        last = f"; the newest is #{seen[0].id}: {seen[0].verdict}" if seen else ""
        raise GateRefused(
            f"refusing to promote {model} on {project}: no complete, passing regression of it in the "
            f"last {max_age} ([regress] max_age){last}",
            hint=f"run `corral regress --candidate {model} --project {project}` and promote after it passes",
        )
    current = state.current_pin(project)
    return state.pin_model(
        project,
        model,
        current.small_model if current else config.agent.small_model,
        current.claude_code if current else config.agent.claude_code,
        pinned_by=actor,
        tool_surface_hash=current.tool_surface_hash if current else "",
        reason=(reason + "; " if reason else "")
        + f"promoted after regression #{passing.id} ({passing.tasks} tasks)",
    )
