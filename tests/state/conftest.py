"""State-store fixtures: every test runs on SQLite, on the real Postgres started by .ci/services.sh, and
on that Postgres once more through Debian's pgbouncer in transaction pooling mode (how Supabase's pooler
on port 6543 runs), so consecutive transactions of one client may land on different server backends and
one backend serves many clients.

Postgres gets one fresh database per test session (dropped after); between tests its tables are
truncated, so each test starts empty on every backend. The pooled URL reaches the same database.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from corral.settings import Settings
from corral.state.db import StateStore
from corral.state.schema import TEAM_SCOPED
from tests.conftest import require_env

TEAM = "team-a"
PROJECT = "shop"


@contextmanager
def fresh_postgres_database(admin_url: str, prefix: str = "corral_test") -> Iterator[str]:
    """A new, empty database on the test server; dropped (even with open connections) afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    return require_env("CORRAL_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    with fresh_postgres_database(postgres_admin_url) as url:
        yield url


def via_pgbouncer(url: str) -> str:
    """The same database on the test server, reached through the transaction-mode pgbouncer."""
    pooler = make_url(require_env("CORRAL_TEST_PGBOUNCER_URL"))
    return make_url(url).set(host=pooler.host, port=pooler.port).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pgbouncer_url(postgres_url: str) -> str:
    return via_pgbouncer(postgres_url)


def _truncate(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            if sa.inspect(conn).has_table("runs"):
                conn.execute(sa.text(f"TRUNCATE {', '.join(TEAM_SCOPED)} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres", "pgbouncer"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for an empty store: a new SQLite file, or the session's Postgres truncated, reached
    directly or through the pooler."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    url: str = request.getfixturevalue("postgres_url")
    _truncate(url)
    return url if request.param == "postgres" else str(request.getfixturevalue("pgbouncer_url"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def open_store(state_url: str, settings: Settings) -> Iterator[Callable[[str], StateStore]]:
    """Opens stores on the test database for any team; closes them all at the end."""
    opened: list[StateStore] = []

    def _open(team: str = TEAM) -> StateStore:
        store = StateStore.open(state_url, settings, team=team)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[[str], StateStore]) -> StateStore:
    opened = open_store(TEAM)
    opened.ensure_project(PROJECT, repo="/repos/shop", image="corral/agent:default", config_snapshot={"a": 1})
    return opened
