"""Model pins and the promotion gate, on SQLite and Postgres: the pin history is kept, and
`model promote` is refused without a complete, passing, fresh regression of that candidate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from corral.config import Config, parse_config
from corral.errors import GateRefused
from corral.regress.gate import promote
from corral.state.db import StateStore
from corral.state.schema import regressions
from tests.state.conftest import PROJECT

PINNED = "claude-sonnet-4-5-20250929"
CANDIDATE = "claude-sonnet-5-0-20260301"


def _pin(store: StateStore) -> None:
    store.pin_model(
        PROJECT, PINNED, "claude-haiku-4-5-20251001", "2.1.332", pinned_by="ops", reason="initial"
    )


def _suite(store: StateStore, verdict: str, *, partial: bool = False, candidate: str = CANDIDATE) -> int:
    row = store.record_regression(
        PROJECT, candidate, PINNED, verdict, tasks=12, epochs=3, summary={"verdict": verdict}, partial=partial
    )
    return row.id


def test_the_pin_history_keeps_who_when_and_why(store: StateStore) -> None:
    _pin(store)
    store.pin_model(PROJECT, PINNED, "claude-haiku-4-5-20251001", "2.1.400", pinned_by="bo", reason="new CLI")
    history = store.pin_history(PROJECT)
    assert [(p.pinned_by, p.reason, p.claude_code) for p in history] == [
        ("bo", "new CLI", "2.1.400"),
        ("ops", "initial", "2.1.332"),
    ]
    assert history[0].pinned_at >= history[1].pinned_at
    assert store.current_pin(PROJECT) == history[0]


def test_promote_is_refused_without_a_passing_regression(store: StateStore) -> None:
    _pin(store)
    config = Config()
    with pytest.raises(GateRefused, match="no complete, passing regression"):
        promote(store, PROJECT, CANDIDATE, config, actor="bo")
    for verdict, partial in (("fail", False), ("inconclusive", False), ("pass", True)):
        _suite(store, verdict, partial=partial)
        with pytest.raises(GateRefused):
            promote(store, PROJECT, CANDIDATE, config, actor="bo")
    _suite(store, "pass", candidate="claude-other-20260301")  # another candidate's pass does not count
    with pytest.raises(GateRefused):
        promote(store, PROJECT, CANDIDATE, config, actor="bo")
    assert store.current_pin(PROJECT).model == PINNED  # type: ignore[union-attr]


def test_promote_needs_the_pass_to_be_newer_than_max_age_and_records_who(store: StateStore) -> None:
    _pin(store)
    passed = _suite(store, "pass")
    with store.transaction(write=True) as conn:
        conn.execute(
            sa.update(regressions)
            .where(regressions.c.id == passed)
            .values(created_at=datetime.now(UTC) - timedelta(days=8))
        )
    with pytest.raises(GateRefused, match="7d"):
        promote(store, PROJECT, CANDIDATE, Config(), actor="bo")
    # A longer max_age in corral.toml lets the same suite count.
    month = parse_config('[regress]\nmax_age = "30d"\n', "corral.toml")
    pin = promote(store, PROJECT, CANDIDATE, month, actor="bo", reason="quarterly upgrade")
    assert (pin.model, pin.pinned_by) == (CANDIDATE, "bo")
    assert f"regression #{passed}" in pin.reason and "quarterly upgrade" in pin.reason
    assert pin.small_model == "claude-haiku-4-5-20251001" and pin.claude_code == "2.1.332"
    assert [p.model for p in store.pin_history(PROJECT)] == [CANDIDATE, PINNED]
