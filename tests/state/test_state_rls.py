"""Team scoping: on Postgres, row-level security hides another team's rows even from a hand-written
query; on SQLite (and through the API on both) every query filters by team."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa

from corral.errors import NotFound
from corral.state import preferences as prefs
from corral.state.db import StateStore
from corral.state.schema import TEAM_SCOPED
from corral.state.sessions import open_session
from corral.state.users import add_user


def _seed(store: StateStore, project: str) -> str:
    store.ensure_project(project, config_snapshot={"team": store.team})
    run_id = store.create_run(project, f"{store.team} task", "/r", "abc").run_id
    store.transition(run_id, "preparing")  # type: ignore[arg-type]
    store.record_approval(run_id, f"human:{store.team}", "approved")
    store.pin_model(project, "claude-a-20250101", "claude-b-20250101", "2.1.332", pinned_by=store.team)
    store.issue_token(["forge.comment"], ttl=600, run_id=run_id)
    prefs.add_preference(store, project, f"{store.team} secret rule about billing")
    store.record_regression(
        project, "claude-c-20260101", "claude-a-20250101", "pass", tasks=8, epochs=3, summary={}
    )
    reviewer = add_user(store, f"{store.team}-reviewer", "approver")
    open_session(store, reviewer, timedelta(hours=1))
    return run_id


@pytest.fixture
def two_teams(open_store: Callable[[str], StateStore]) -> tuple[StateStore, StateStore, str, str]:
    team_a, team_b = open_store("team-a"), open_store("team-b")
    # The same project name in both teams, so only the team tells the rows apart.
    return team_a, team_b, _seed(team_a, "shop"), _seed(team_b, "shop")


def test_the_api_never_shows_another_teams_rows(two_teams: tuple[StateStore, StateStore, str, str]) -> None:
    team_a, team_b, run_a, run_b = two_teams
    assert [r.run_id for r in team_a.list_runs()] == [run_a]
    assert [r.run_id for r in team_b.list_runs()] == [run_b]
    with pytest.raises(NotFound):
        team_a.get_run(run_b)
    with pytest.raises(NotFound):
        team_a.transition(run_b, "failed", "cross-team")  # type: ignore[arg-type]
    assert team_b.get_run(run_b).phase == "preparing"
    assert [p.rule for p in prefs.list_preferences(team_a)] == ["team-a secret rule about billing"]
    assert [p.rule for p in prefs.retrieve(team_a, "shop", "billing rule")] == [
        "team-a secret rule about billing"
    ]
    assert [a.actor for a in team_a.list_approvals()] == ["human:team-a"]
    pin = team_a.current_pin("shop")
    assert pin is not None and pin.pinned_by == "team-a"
    assert team_a.get_project("shop").config_snapshot == {"team": "team-a"}
    assert len(team_a.list_regressions("shop")) == 1


@pytest.mark.parametrize("state_url", ["postgres", "pgbouncer"], indirect=True)
def test_rls_hides_team_bs_rows_from_team_as_hand_written_queries(
    two_teams: tuple[StateStore, StateStore, str, str], state_url: str
) -> None:
    team_a, _team_b, run_a, run_b = two_teams
    with team_a.transaction() as conn:
        assert conn.execute(sa.text("SELECT current_user")).scalar() == "corral_app"
        runs = conn.execute(sa.text("SELECT run_id, team FROM runs")).all()
        assert [tuple(r) for r in runs] == [(run_a, "team-a")]
        assert (
            conn.execute(sa.text("SELECT count(*) FROM runs WHERE run_id = :b"), {"b": run_b}).scalar() == 0
        )
        rules = conn.execute(sa.text("SELECT rule FROM preferences")).scalars().all()
        assert rules == ["team-a secret rule about billing"]
        for table in TEAM_SCOPED:
            teams = conn.execute(sa.text(f"SELECT DISTINCT team FROM {table}")).scalars().all()
            assert teams == ["team-a"], table
        # Nor can team A change or delete team B's rows behind the API's back.
        assert (
            conn.execute(
                sa.text("UPDATE runs SET task = 'hijacked' WHERE run_id = :b"), {"b": run_b}
            ).rowcount
            == 0
        )
        assert conn.execute(sa.text("DELETE FROM preferences WHERE team = 'team-b'")).rowcount == 0
    # Writing a row into another team is refused by the policy's WITH CHECK.
    with (
        pytest.raises(sa.exc.ProgrammingError, match="row-level security"),
        team_a.transaction(write=True) as conn,
    ):
        conn.execute(
            sa.text(
                "INSERT INTO preferences (team, project, rule, source_kind, confidence, created_at, "
                "valid_from) VALUES ('team-b', 'shop', 'planted', 'manual', 1, now(), now())"
            )
        )
    # The rows are there (as the owner sees them): it is the policy that hides them.
    engine = sa.create_engine(state_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM runs")).scalar() == 2
            assert conn.execute(
                sa.text("SELECT task FROM runs WHERE run_id = :b"), {"b": run_b}
            ).scalar() == ("team-b task")
            conn.rollback()
            # A session in the app role that never set corral.team sees no team at all.
            with conn.begin():
                conn.execute(sa.text("SET LOCAL ROLE corral_app"))
                for table in TEAM_SCOPED:
                    assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() == 0, table
    finally:
        engine.dispose()


@pytest.mark.parametrize("state_url", ["postgres", "pgbouncer"], indirect=True)
def test_every_team_scoped_table_has_rls_forced_with_the_team_policy(
    state_url: str, store: StateStore
) -> None:
    engine = sa.create_engine(state_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, p.qual FROM pg_class c "
                    "JOIN pg_policies p ON p.tablename = c.relname WHERE c.relname = ANY(:tables)"
                ),
                {"tables": list(TEAM_SCOPED)},
            ).all()
    finally:
        engine.dispose()
    assert {r.relname for r in rows} == set(TEAM_SCOPED)
    for row in rows:
        assert row.relrowsecurity, row.relname
        # preferences alone is not FORCEd, so its owner-run search functions can use the GIN index
        # (see migration 0003); every other table binds even its owner.
        assert row.relforcerowsecurity is (row.relname != "preferences"), row.relname
        assert "current_setting('corral.team'" in row.qual, row.relname


@pytest.mark.parametrize("state_url", ["postgres", "pgbouncer"], indirect=True)
def test_the_search_functions_are_scoped_to_the_sessions_team(
    two_teams: tuple[StateStore, StateStore, str, str], state_url: str
) -> None:
    team_a, _team_b, _run_a, _run_b = two_teams
    search = "SELECT id FROM corral_preference_search('shop', 'secret | rule', 'secret | rule', now(), 50)"
    counts = "SELECT word, n FROM corral_preference_term_counts('shop', ARRAY['secret', 'nothing'])"
    with team_a.transaction() as conn:
        ids = conn.execute(sa.text(search)).scalars().all()
        assert [p.id for p in prefs.list_preferences(team_a)] == ids
        # Team B's rule holds "secret" too, but only team A's own preferences are counted.
        assert [tuple(r) for r in conn.execute(sa.text(counts))] == [(None, 1), ("secret", 1), ("nothing", 0)]
    engine = sa.create_engine(state_url)
    try:
        with engine.connect() as conn, conn.begin():
            # The app role without a team finds nothing, though the functions run as the owner.
            conn.execute(sa.text("SET LOCAL ROLE corral_app"))
            assert conn.execute(sa.text(search)).all() == []
            assert [tuple(r) for r in conn.execute(sa.text(counts))] == [
                (None, 0),
                ("secret", 0),
                ("nothing", 0),
            ]
            # And the team it is given is the only one it searches.
            conn.execute(sa.text("SELECT set_config('corral.team', 'team-b', true)"))
            rules = conn.execute(sa.text(search.replace("id FROM", "id, rank FROM"))).all()
            assert len(rules) == 1 and rules[0].id not in ids
    finally:
        engine.dispose()
