"""What a Supabase pooler in transaction mode needs: no server-side prepared statements, and no
session state that outlives a transaction (the next transaction may run on another backend, and the
backend serves other clients next). Each test runs on the direct server and through the real pgbouncer
in transaction mode; the last one shows, through that pooler, that a backend really passes from one
client to the next, and that corral's transactions leave it clean."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from corral.state import preferences as prefs
from corral.state.db import StateStore
from tests.state.conftest import PROJECT

BOTH = pytest.mark.parametrize("state_url", ["postgres", "pgbouncer"], indirect=True)


@BOTH
def test_repeated_queries_never_prepare_statements_on_the_server(store: StateStore) -> None:
    run_id = store.create_run(PROJECT, "task", "/r", "abc").run_id
    # psycopg would prepare a statement on its 5th execution by default; do each one a dozen times.
    for _ in range(12):
        store.get_run(run_id)
        store.list_runs()
        store.update_run(run_id, pid=1)
        prefs.retrieve(store, PROJECT, "some task words")
    with store.transaction() as conn:
        assert conn.connection.dbapi_connection.prepare_threshold is None  # type: ignore[union-attr]
        assert conn.execute(sa.text("SELECT count(*) FROM pg_prepared_statements")).scalar() == 0


@BOTH
def test_team_and_role_last_only_for_their_transaction(store: StateStore, state_url: str) -> None:
    with store.transaction() as conn:
        assert conn.execute(sa.text("SELECT current_setting('corral.team', true), current_user")).one() == (
            "team-a",
            "corral_app",
        )
        raw = conn.connection.dbapi_connection
    # The same pooled connection, after the transaction: nothing left behind for the next client.
    assert raw is not None
    with raw.cursor() as cursor:
        cursor.execute("SELECT coalesce(current_setting('corral.team', true), ''), current_user")
        assert cursor.fetchone() == ("", make_url(state_url).username)
    raw.rollback()


@pytest.mark.parametrize("state_url", ["pgbouncer"], indirect=True)
def test_through_the_pooler_a_backend_passes_to_the_next_client_clean(
    store: StateStore, state_url: str
) -> None:
    dsn = make_url(state_url).set(drivername="postgresql").render_as_string(hide_password=False)
    read_back = "SELECT pg_backend_pid(), coalesce(current_setting('corral.team', true), ''), current_user"
    # The control: a session-level setting made by one client is what the next client sees, on the same
    # backend. This is what a store that set its team once per connection would leak to other clients.
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as first:
        row = first.execute("SELECT pg_backend_pid(), set_config('corral.team', 'leaked', false)").fetchone()
        assert row is not None
        leaky_backend = row[0]
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as second:
        assert second.execute(read_back).fetchone() == (leaky_backend, "leaked", "postgres")
        second.execute("RESET ALL")
    # corral's transaction sets team and role on a backend; the next client gets that backend, clean.
    store.create_run(PROJECT, "task", "/r", "abc")
    with store.transaction() as conn:
        served = conn.execute(sa.text(read_back)).one()
    assert tuple(served)[1:] == ("team-a", "corral_app")
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as after:
        assert after.execute(read_back).fetchone() == (served[0], "", "postgres")
