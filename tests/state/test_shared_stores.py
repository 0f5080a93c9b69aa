"""A long-lived process's runs share its stores (`Services.for_run`): each store is opened once, a run's
`close()` leaves it open, and threads sharing one store (two teams' stores side by side) never see or
change each other's team, on SQLite, Postgres and Postgres through the transaction-mode pooler."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from corral import events as ev
from corral.errors import RunConflict
from corral.scope import Scope
from corral.services import Services
from corral.settings import Settings
from corral.state.db import StateStore
from corral.state.machine import Phase
from tests.state.conftest import PROJECT

THREADS = 4
RUNS_PER_THREAD = 5


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str | None, str]]:
    """Every real `StateStore.open`, by (url, team)."""
    seen: list[tuple[str | None, str]] = []
    real = StateStore.open.__func__  # type: ignore[attr-defined]

    def counting(
        cls: type[StateStore], url: str | None, settings: Settings, team: str = "default", **kw: Any
    ) -> StateStore:
        seen.append((url, team))
        store: StateStore = real(cls, url, settings, team, **kw)
        return store

    monkeypatch.setattr(StateStore, "open", classmethod(counting))
    return seen


@pytest.fixture
def parent(state_url: str, tmp_path: Path) -> Iterator[Services]:
    services = Services(Settings(home=tmp_path / "home", state_url=state_url), scope=Scope("team-a", "test"))
    yield services
    services.close()


def test_runs_borrow_the_parents_stores_and_closing_one_leaves_them_usable(
    parent: Services, opens: list[tuple[str | None, str]]
) -> None:
    first, second = parent.for_run(), parent.for_run(lambda _m: None)
    assert first.state() is parent.state() is second.state()
    assert first.audit() is parent.audit() is second.audit()
    assert first.progress is not second.progress  # each run keeps its own progress
    other = parent.for_run(scope=Scope("team-b", "test"))
    assert other.state() is not parent.state() and other.state().team == "team-b"
    assert parent.for_run(scope=Scope("team-b", "test")).state() is other.state()

    first.state().ensure_project(PROJECT, repo="/r")
    run_id = first.state().create_run(PROJECT, "t", "/r", "0" * 40).run_id
    recorder = first.audit().for_run(run_id)
    recorder.emit(ev.AgentStopped(turns=1, reason="done"))
    recorder.close()
    first.close()
    other.close()

    # The server's stores go on after a run closed its Services: reads, writes and a new chain.
    assert parent.state().get_run(run_id).phase == Phase.QUEUED
    parent.state().transition(run_id, Phase.PREPARING)
    assert second.state().get_run(run_id).phase == Phase.PREPARING
    again = second.audit().for_run(run_id)
    again.emit(ev.AgentStopped(turns=2, reason="more"))
    again.close()
    assert [e.seq for e in parent.audit().read(run_id)] == [1, 2]
    assert Counter(team for _url, team in opens) == {"team-a": 1, "team-b": 1}


def test_threads_asking_for_a_store_at_once_open_it_once(
    parent: Services, opens: list[tuple[str | None, str]]
) -> None:
    runs = [parent.for_run() for _ in range(8)]
    barrier = threading.Barrier(len(runs))
    got: list[StateStore] = []

    def ask(services: Services) -> None:
        barrier.wait()
        got.append(services.state())
        services.audit()

    threads = [threading.Thread(target=ask, args=(s,)) for s in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == len(runs) and len({id(s) for s in got}) == 1
    assert len(opens) == 1
    assert len(parent._stores.audits) == 1


def test_threads_sharing_each_teams_store_see_and_change_only_their_team(
    parent: Services, state_url: str
) -> None:
    teams = ("team-a", "team-b")
    stores = {team: parent.for_run(scope=Scope(team, "test")).state() for team in teams}
    for store in stores.values():
        store.ensure_project(PROJECT, repo="/r")
    made: dict[str, list[str]] = {team: [] for team in teams}
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS * len(teams))

    def work(team: str) -> None:
        store = stores[team]
        try:
            barrier.wait()
            for _ in range(RUNS_PER_THREAD):
                run_id = store.create_run(PROJECT, f"{team} task", "/r", "0" * 40).run_id
                made[team].append(run_id)
                store.transition(run_id, Phase.PREPARING)
                store.add_usage(run_id, cost_usd=0.5)
                assert {r.team for r in store.list_runs(limit=1000)} == {team}
                if store.backend == "postgresql":
                    with store.transaction() as conn:  # row-level security, not the API's filter
                        seen = conn.execute(sa.text("SELECT DISTINCT team FROM runs")).scalars().all()
                    assert seen == [team]
        except BaseException as exc:  # reported below, with the thread's team
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(team,)) for team in teams for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for team, store in stores.items():
        runs = store.list_runs(limit=1000)
        assert sorted(r.run_id for r in runs) == sorted(made[team])
        assert len(runs) == THREADS * RUNS_PER_THREAD
        assert all(r.phase == Phase.PREPARING and r.cost_usd == 0.5 for r in runs)
    if stores["team-a"].backend == "postgresql":
        # The team and role were set for each transaction only: a pooled connection keeps neither.
        with stores["team-a"]._admin_transaction() as conn:
            assert conn.execute(sa.text("SELECT current_setting('corral.team', true)")).scalar() in (None, "")
            assert conn.execute(sa.text("SELECT current_user")).scalar() != "corral_app"


def _race(store: StateStore, run_id: str) -> list[str]:
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def move(to: Phase) -> None:
        barrier.wait()
        try:
            store.transition(run_id, to, f"by {to.value}", expect=Phase.PREPARING)
            outcomes.append("won")
        except RunConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=move, args=(to,)) for to in (Phase.RUNNING, Phase.FAILED)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return sorted(outcomes)


def test_two_threads_moving_one_run_through_a_shared_store_have_one_winner(parent: Services) -> None:
    store = parent.for_run().state()
    store.ensure_project(PROJECT, repo="/r")
    for _ in range(6):
        run_id = store.create_run(PROJECT, "race", "/r", "0" * 40).run_id
        store.transition(run_id, Phase.PREPARING)
        assert _race(store, run_id) == ["conflict", "won"]
        assert store.get_run(run_id).version == 3
