"""Process entry points for the concurrency tests (importable by `spawn` children)."""

from __future__ import annotations

from multiprocessing.synchronize import Barrier
from typing import Any

from corral.errors import RunConflict
from corral.settings import Settings
from corral.state.db import StateStore
from corral.state.machine import Phase


def race_transition(
    url: str, team: str, run_ids: list[str], target: str, barrier: Barrier, results: Any
) -> None:
    """For each run: wait for the other process, then try running → `target`."""
    store = StateStore.open(url, Settings(), team=team)
    try:
        for run_id in run_ids:
            barrier.wait(timeout=60)
            try:
                store.transition(run_id, Phase(target), reason=f"by {target}", expect=Phase.RUNNING)
                results.put((run_id, target, "won", ""))
            except RunConflict as exc:
                results.put((run_id, target, "conflict", str(exc)))
            except Exception as exc:  # reported to the test, which fails on it
                results.put((run_id, target, "error", repr(exc)))
    finally:
        store.close()


def add_usage_many(url: str, team: str, run_id: str, times: int, barrier: Barrier) -> None:
    store = StateStore.open(url, Settings(), team=team)
    try:
        barrier.wait(timeout=60)
        for _ in range(times):
            store.add_usage(run_id, input_tokens=1, cost_usd=0.5)
    finally:
        store.close()


def open_fresh(url: str, barrier: Barrier, results: Any) -> None:
    """Open (and so migrate) a database at the same moment as another process."""
    barrier.wait(timeout=60)
    try:
        with StateStore.open(url, Settings(), team="t") as store:
            results.put(("ok", store.describe().revision))
    except Exception as exc:  # reported to the test, which fails on it
        results.put(("error", repr(exc)))


def use_token(url: str, team: str, secret: str, barrier: Barrier, results: Any) -> None:
    from corral.errors import TokenRefused

    store = StateStore.open(url, Settings(), team=team)
    try:
        barrier.wait(timeout=60)
        try:
            store.check_token(secret)
            results.put("accepted")
        except TokenRefused as exc:
            results.put(f"refused:{exc.reason}")
    finally:
        store.close()
