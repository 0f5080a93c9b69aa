"""Which state database, and an engine for it that behaves the same on SQLite and Postgres.

Postgres goes through psycopg 3 with `prepare_threshold=None`: Supabase's pooler on port 6543 runs in
transaction mode, where a named server-side prepared statement made on one backend is missing on the
next. Session state does not survive there either, which is why the store sets `corral.team` and the
role with `set_config(..., true)` at the start of every transaction instead of once per connection.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url

from corral.errors import StoreError
from corral.settings import Settings

CONNECT_TIMEOUT_SECONDS = 5
SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITE_OPTION = "corral_write"
"""Execution option marking a transaction that will write: on SQLite it begins IMMEDIATE, so two
writers queue on the lock instead of one failing with 'database is locked' halfway through."""


def resolve_state_url(config_url: str | None, settings: Settings) -> str | None:
    """The state URL to use: `CORRAL_STATE_URL` overrides `[stores].state_url` in corral.toml.

    None means the embedded default, SQLite at `settings.state_db`.
    """
    return settings.state_url or config_url or None


def parse_url(url: str | None, settings: Settings) -> URL:
    if url is None:
        return URL.create("sqlite", database=str(settings.state_db))
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreError(
            f"state URL {url!r} is not a database URL",
            hint="use postgresql+psycopg://user:password@host:5432/db or sqlite:///path/state.db",
        ) from exc
    if parsed.get_backend_name() == "postgresql":
        # Always psycopg 3: the default driver name would pick psycopg2, which is not installed.
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        return parsed
    raise StoreError(
        f"state URL {safe_url(parsed)}: backend {parsed.get_backend_name()!r} is not supported",
        hint="corral's state store runs on Postgres (postgresql+psycopg://...) or SQLite (sqlite:///...)",
    )


def safe_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def where(url: URL) -> str:
    """host:port (or the file) of a database, for error messages."""
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database or ':memory:'}"
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def create_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    return sa.create_engine(
        url,
        connect_args={"prepare_threshold": None, "connect_timeout": CONNECT_TIMEOUT_SECONDS},
        pool_pre_ping=True,
    )


def _enable_wal(cursor: Any) -> None:
    """Switch a database file to WAL, waiting out a concurrent opener.

    The switch needs an exclusive lock, and SQLite answers "database is locked" at once, without
    its busy handler, when two processes open a fresh file together; so retry for a while.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_engine(url: URL) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (the `begin` hook below): pysqlite's own implicit
        # BEGIN does not cover DDL and cannot begin IMMEDIATE.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        _enable_wal(cursor)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def unreachable(url: URL, exc: Exception) -> StoreError:
    """The error for a database we could not connect to: names host and port, never the password."""
    detail = str(getattr(exc, "orig", exc)).strip().splitlines()
    first = detail[0] if detail else type(exc).__name__
    return StoreError(
        f"cannot reach the state database at {where(url)} ({safe_url(url)}): {first}",
        hint="check that the database is running and reachable, and that CORRAL_STATE_URL or "
        "[stores].state_url in corral.toml is right",
    )
