"""The store's foundation: one engine, one team, and team-scoped transactions.

Every read and write runs in `transaction()`, which on Postgres first sets `corral.team` and the
`corral_app` role for that transaction only (row-level security does the scoping; a pooler in
transaction mode keeps no session state), and on SQLite every query filters on the team.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine

from corral.errors import RunNotFound
from corral.state import engine as _engine

APP_ROLE = "corral_app"


def utcnow() -> datetime:
    return datetime.now(UTC)


def row_dict(row: sa.Row[Any]) -> dict[str, Any]:
    return dict(row._mapping)


def run_not_found(run_id: str, team: str) -> RunNotFound:
    return RunNotFound(
        f"no run {run_id!r} in team {team!r}",
        hint="see `corral runs` for this team's runs; choose another team with --team NAME or CORRAL_TEAM",
        team=team,
    )


class StoreBase:
    """One team's view of a state database."""

    def __init__(self, engine: Engine, url: URL, team: str, app_role: str | None) -> None:
        self._engine = engine
        self.url = url
        self.team = team
        self._app_role = app_role if engine.dialect.name == "postgresql" else None

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def backend(self) -> str:
        return self._engine.dialect.name

    @contextmanager
    def _connect(self, write: bool) -> Iterator[Connection]:
        try:
            conn = self._engine.connect()
        except sa.exc.OperationalError as exc:
            raise _engine.unreachable(self.url, exc) from exc
        with conn:
            if write:
                conn.execution_options(**{_engine.WRITE_OPTION: True})
            yield conn

    @contextmanager
    def _admin_transaction(self) -> Iterator[Connection]:
        """As the connecting user, without the team scope: migrations and the revision only."""
        with self._connect(write=True) as conn, conn.begin():
            yield conn

    @contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[Connection]:
        """A transaction scoped to this store's team; commits on exit, rolls back on error.

        On Postgres `set_config(..., true)` lasts only for this transaction, which is what a pooler
        in transaction mode needs, and the role switch makes row-level security apply to it.
        """
        with self._connect(write) as conn, conn.begin():
            if self._engine.dialect.name == "postgresql":
                if self._app_role:
                    conn.execute(
                        sa.text(
                            "SELECT set_config('corral.team', :team, true), set_config('role', :role, true)"
                        ),
                        {"team": self.team, "role": self._app_role},
                    )
                else:
                    conn.execute(
                        sa.text("SELECT set_config('corral.team', :team, true)"), {"team": self.team}
                    )
            yield conn

    def _insert(self, table: sa.Table) -> Any:
        return (postgresql.insert if self.backend == "postgresql" else sqlite.insert)(table)
