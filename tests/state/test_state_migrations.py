"""Migrations run from empty, twice in a row, and up from the previous revision, on both backends;
newer databases and unreachable servers are refused with errors that say which and where."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from corral.errors import StoreError
from corral.settings import Settings
from corral.state import migrate
from corral.state.base import utcnow
from corral.state.db import StateStore, resolve_state_url
from corral.state.schema import TEAM_SCOPED
from tests.state.conftest import fresh_postgres_database, via_pgbouncer

HEAD = "0007_server_sessions"


@contextmanager
def empty_database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh' / 'state.db'}"
    else:
        with fresh_postgres_database(request.getfixturevalue("postgres_admin_url"), "corral_mig") as url:
            yield url if backend == "postgres" else via_pgbouncer(url)


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "pgbouncer"])
def test_migrations_run_up_from_empty_and_twice_in_a_row(
    backend: str, tmp_path: Path, settings: Settings, request: pytest.FixtureRequest
) -> None:
    with empty_database(backend, tmp_path, request) as url:
        if backend != "sqlite":
            assert _tables(url) == set()
        with StateStore.open(url, settings, team="t") as store:
            info = store.describe()
            assert (info.revision, info.head) == (HEAD, HEAD)
            assert info.backend == ("sqlite" if backend == "sqlite" else "postgresql")
            store.ensure_project("p")
            run = store.create_run("p", "task", "/repo", "abc")
        assert set(TEAM_SCOPED) <= _tables(url)
        # Twice in a row: opening again migrates nothing and keeps the data.
        with StateStore.open(url, settings, team="t") as store:
            assert store.describe().revision == HEAD
            assert store.get_run(run.run_id).task == "task"
        # And the upgrade itself is idempotent when called again inside one transaction.
        engine = sa.create_engine(url)
        try:
            with engine.begin() as conn:
                assert migrate.upgrade(conn, "test") == HEAD
                assert migrate.upgrade(conn, "test") == HEAD
                assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
        finally:
            engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "pgbouncer"])
def test_a_database_at_0006_upgrades_to_server_sessions_keeping_its_users(
    backend: str, tmp_path: Path, settings: Settings, request: pytest.FixtureRequest
) -> None:
    from alembic import command

    from corral.state.sessions import live_session, open_session
    from corral.state.users import get_user

    with empty_database(backend, tmp_path, request) as url:
        (tmp_path / "fresh").mkdir(exist_ok=True)
        engine = sa.create_engine(url)
        try:
            with engine.begin() as conn:  # a database an older corral made and used
                command.upgrade(migrate.alembic_config(conn), "0006_users")
                if backend != "sqlite":  # the owner is bound by the team policy too (FORCE)
                    conn.execute(sa.text("SELECT set_config('corral.team', 't', true)"))
                conn.execute(
                    sa.text(
                        "INSERT INTO users (team, name, role, created_at) VALUES ('t', 'ann', 'admin', :at)"
                    ),
                    {"at": utcnow()},
                )
        finally:
            engine.dispose()
        assert "server_sessions" not in _tables(url)
        with StateStore.open(url, settings, team="t") as store:
            assert store.describe().revision == HEAD
            ann = get_user(store, "ann")
            _record, session_id = open_session(store, ann, timedelta(hours=1))
            assert live_session(store, session_id, "ann").user_name == "ann"
        assert "server_sessions" in _tables(url)


def test_the_listed_revisions_are_exactly_the_packaged_scripts() -> None:
    # A new migration script must be added to migrate.REVISIONS too, or this fails.
    assert list(migrate.REVISIONS) == migrate.script_revisions()
    assert migrate.head_revision() == HEAD == migrate.script_revisions()[-1]


def test_a_database_migrated_by_a_newer_corral_is_refused_with_its_version(
    state_url: str, settings: Settings
) -> None:
    StateStore.open(state_url, settings).close()
    engine = sa.create_engine(state_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '0042_from_the_future'"))
        with pytest.raises(StoreError) as err:
            StateStore.open(state_url, settings)
        assert "0042_from_the_future" in str(err.value)
        assert HEAD in str(err.value)
        assert "newer corral" in str(err.value)
        # Refused without touching it: the stamp is still the future one.
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == (
                "0042_from_the_future"
            )
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE alembic_version SET version_num = '{HEAD}'"))
        engine.dispose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_postgres_is_named_by_host_and_port_without_the_password(settings: Settings) -> None:
    port = _closed_port()
    url = f"postgresql+psycopg://corral:hunter2secret@127.0.0.1:{port}/corral"
    with pytest.raises(StoreError) as err:
        StateStore.open(url, settings)
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message
    assert "cannot reach the state database" in message
    assert "hunter2secret" not in message


def test_a_url_for_an_unsupported_backend_is_refused(settings: Settings) -> None:
    with pytest.raises(StoreError, match="mysql"):
        StateStore.open("mysql://u@h/db", settings)
    with pytest.raises(StoreError, match="not a database URL"):
        StateStore.open("not a url", settings)


def test_default_url_is_sqlite_under_the_corral_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "h")
    with StateStore.open(None, settings) as store:
        assert store.describe().backend == "sqlite"
    assert (tmp_path / "h" / "state.db").is_file()


def test_environment_url_overrides_corral_toml(tmp_path: Path) -> None:
    from_toml = "postgresql+psycopg://u@toml-host/db"
    assert resolve_state_url(from_toml, Settings(home=tmp_path)) == from_toml
    env = Settings(home=tmp_path, state_url="postgresql+psycopg://u@env-host/db")
    assert resolve_state_url(from_toml, env) == "postgresql+psycopg://u@env-host/db"
    assert resolve_state_url(None, Settings(home=tmp_path)) is None
