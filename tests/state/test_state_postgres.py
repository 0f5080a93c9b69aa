"""What a Supabase pooler in transaction mode needs: no server-side prepared statements, and no
session state that outlives a transaction (the next transaction may run on another backend)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from corral.state import preferences as prefs
from corral.state.db import StateStore
from tests.state.conftest import PROJECT

pytestmark = pytest.mark.parametrize("state_url", ["postgres"], indirect=True)


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
