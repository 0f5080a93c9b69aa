"""The runs list: filtered and paginated in SQL, so 10,000 runs cost one indexed page query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from corral.errors import CorralError
from corral.state.db import StateStore, _run
from corral.state.machine import Phase
from corral.state.models import RunRecord
from corral.state.schema import runs


def _day(value: str) -> datetime:
    try:
        start = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CorralError(f"date {value!r} is not YYYY-MM-DD", hint="e.g. 2026-12-01") from exc
    return start if start.tzinfo else start.replace(tzinfo=UTC)


def list_runs(
    store: StateStore,
    phase: str,
    project: str,
    requester: str,
    since: str,
    page: int,
    size: int,
    until: str = "",
) -> tuple[list[RunRecord], bool]:
    """One page, newest first, and whether another page follows. `since` and `until` are days, both
    included (a bare date means that whole day for `until`)."""
    query = sa.select(runs).where(runs.c.team == store.team)
    if phase:
        try:
            query = query.where(runs.c.phase == Phase(phase).value)
        except ValueError as exc:
            raise CorralError(
                f"no phase {phase!r}", hint=f"one of {', '.join(p.value for p in Phase)}"
            ) from exc
    if project:
        query = query.where(runs.c.project == project)
    if requester:
        query = query.where(runs.c.requester == requester)
    if since:
        query = query.where(runs.c.created_at >= _day(since))
    if until:
        end = _day(until)
        query = query.where(runs.c.created_at < (end + timedelta(days=1) if len(until) == 10 else end))
    query = (
        query.order_by(runs.c.created_at.desc(), runs.c.run_id.desc())
        .offset((page - 1) * size)
        .limit(size + 1)
    )
    with store.transaction() as conn:
        rows = [_run(r) for r in conn.execute(query).all()]
    return rows[:size], len(rows) > size
