"""Two processes changing the same run at once: one wins, the other gets a clear conflict, and no
update is lost."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from corral.state import migrate
from corral.state.db import StateStore
from corral.state.machine import Phase
from tests.state.conftest import PROJECT, TEAM, fresh_postgres_database, via_pgbouncer
from tests.state.race_worker import add_usage_many, open_fresh, race_transition, use_token

RUNS = 12


def _running_run(store: StateStore) -> str:
    run_id = store.create_run(PROJECT, "race", "/repos/shop", "0" * 40).run_id
    for phase in (Phase.PREPARING, Phase.RUNNING):
        store.transition(run_id, phase)
    return run_id


def test_concurrent_transitions_from_two_processes_have_exactly_one_winner(
    store: StateStore, state_url: str
) -> None:
    run_ids = [_running_run(store) for _ in range(RUNS)]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=race_transition, args=(state_url, TEAM, run_ids, target, barrier, results))
        for target in (Phase.CHECKING.value, Phase.FAILED.value)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in range(2 * RUNS)]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0

    assert not [o for o in outcomes if o[2] == "error"], outcomes
    by_run: dict[str, list[tuple[str, str, str, str]]] = {}
    for outcome in outcomes:
        by_run.setdefault(outcome[0], []).append(outcome)
    for run_id in run_ids:
        assert Counter(o[2] for o in by_run[run_id]) == {"won": 1, "conflict": 1}, by_run[run_id]
        (winner,) = [o[1] for o in by_run[run_id] if o[2] == "won"]
        (conflict,) = [o[3] for o in by_run[run_id] if o[2] == "conflict"]
        assert run_id in conflict and "another process" in conflict
        run = store.get_run(run_id)
        # The winner's change is the one recorded, exactly once, and nothing of the loser's leaked in.
        assert run.phase == Phase(winner)
        assert run.version == 4
        assert run.failure_reason == ("by failed" if winner == "failed" else "")
        moves = [h for h in store.phase_history(run_id) if h.from_phase is Phase.RUNNING]
        assert [(m.to_phase, m.reason) for m in moves] == [(Phase(winner), f"by {winner}")]


def test_usage_added_from_two_processes_at_once_is_never_lost(store: StateStore, state_url: str) -> None:
    run_id = _running_run(store)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=add_usage_many, args=(state_url, TEAM, run_id, 40, barrier)) for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    run = store.get_run(run_id)
    assert (run.input_tokens, run.cost_usd) == (80, 40.0)


def _run_pair(target: object, args: tuple[object, ...]) -> list[object]:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for _ in range(2)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    return outcomes


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "pgbouncer"])
def test_two_processes_opening_a_fresh_database_both_succeed(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        outcomes = _run_pair(open_fresh, (f"sqlite:///{tmp_path / 'fresh.db'}",))
        assert outcomes == [("ok", migrate.head_revision())] * 2
        return
    admin = request.getfixturevalue("postgres_admin_url")
    with fresh_postgres_database(admin, "corral_race") as direct:
        url = direct if backend == "postgres" else via_pgbouncer(direct)
        outcomes = _run_pair(open_fresh, (url,))
        assert outcomes == [("ok", migrate.head_revision())] * 2
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
        finally:
            engine.dispose()


def test_a_one_use_token_used_by_two_processes_at_once_passes_once(store: StateStore, state_url: str) -> None:
    _record, secret = store.issue_token(["forge.comment"], ttl=600, max_uses=1)
    outcomes = _run_pair(use_token, (state_url, TEAM, secret))
    assert sorted(outcomes) == ["accepted", "refused:exhausted"]  # type: ignore[type-var]


def test_one_store_is_safe_to_share_between_threads(store: StateStore) -> None:
    import threading

    run_id = _running_run(store)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(25):
                store.add_usage(run_id, output_tokens=1)
                store.get_run(run_id)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.get_run(run_id).output_tokens == 100
