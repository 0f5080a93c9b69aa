"""Regression suite summaries: written by `corral regress`, read by `corral model promote`.
Mixed into `StateStore`; every query is team-scoped through `transaction()`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from corral.state.base import StoreBase, row_dict, utcnow
from corral.state.models import RegressionRecord
from corral.state.schema import regressions


class RegressionStore(StoreBase):
    def record_regression(
        self,
        project: str,
        candidate: str,
        baseline: str,
        verdict: str,
        *,
        tasks: int,
        epochs: int,
        summary: dict[str, Any],
        partial: bool = False,
        report_path: str = "",
        created_by: str = "",
    ) -> RegressionRecord:
        with self.transaction(write=True) as conn:
            row = conn.execute(
                sa.insert(regressions)
                .values(
                    team=self.team,
                    project=project,
                    candidate=candidate,
                    baseline=baseline,
                    verdict=verdict,
                    partial=partial,
                    tasks=tasks,
                    epochs=epochs,
                    summary=summary,
                    report_path=report_path,
                    created_by=created_by,
                    created_at=utcnow(),
                )
                .returning(*regressions.c)
            ).one()
        return RegressionRecord.model_validate(row_dict(row))

    def list_regressions(
        self, project: str | None = None, candidate: str | None = None
    ) -> list[RegressionRecord]:
        """Newest first."""
        query = sa.select(regressions).where(regressions.c.team == self.team)
        if project is not None:
            query = query.where(regressions.c.project == project)
        if candidate is not None:
            query = query.where(regressions.c.candidate == candidate)
        with self.transaction() as conn:
            rows = conn.execute(query.order_by(regressions.c.id.desc())).all()
        return [RegressionRecord.model_validate(row_dict(r)) for r in rows]

    def latest_passing_regression(
        self, project: str, candidate: str, newer_than: datetime
    ) -> RegressionRecord | None:
        """The newest complete, passing suite of `candidate` on `project` since `newer_than`."""
        for record in self.list_regressions(project, candidate):
            if record.created_at < newer_than:
                return None
            if record.verdict == "pass" and not record.partial:
                return record
        return None
