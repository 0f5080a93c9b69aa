"""Alembic migrations, run programmatically from the package: no alembic.ini in the repository.

`upgrade(conn)` brings a database to head inside the caller's transaction, under a lock, so two
processes opening a fresh database at once do not both create the tables. A database stamped with
a revision this corral does not know was migrated by a newer corral: it is refused, not touched.

The revisions are also listed here, so that opening a database already at head (every open but the
first) neither imports Alembic nor reads the scripts; a test keeps this list equal to the scripts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from corral.errors import StoreError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

SCRIPT_LOCATION = "corral.state:migrations"
MIGRATION_LOCK_KEY = 0x636F7272616C  # "corral": pg advisory lock id shared by every corral process
REVISIONS = (
    "0001_initial",
    "0002_row_level_security",
    "0003_preference_search",
    "0004_delivery",
    "0005_regressions",
    "0006_users",
    "0007_server_sessions",
)
"""Every packaged revision, oldest first; the last is head."""


def alembic_config(conn: Connection | None = None) -> AlembicConfig:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def script_revisions() -> list[str]:
    """The revisions the packaged scripts define, oldest first (reads them through Alembic)."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    return [script.revision for script in scripts.walk_revisions()][::-1]


def head_revision() -> str:
    return REVISIONS[-1]


def known_revisions() -> frozenset[str]:
    return frozenset(REVISIONS)


def current_revision(conn: Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def refuse_newer(revision: str | None, where: str) -> None:
    if revision is not None and revision not in known_revisions():
        raise StoreError(
            f"the state database at {where} is at migration revision {revision!r}, which this corral "
            f"does not know (newest known: {head_revision()!r}); a newer corral has migrated it",
            hint="upgrade corral to the version that migrated this database; corral never downgrades it",
        )


def upgrade(conn: Connection, where: str) -> str:
    """Migrate to head inside `conn`'s open transaction; returns the revision now current."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    revision = current_revision(conn)
    refuse_newer(revision, where)
    if revision != head_revision():
        from alembic import command

        command.upgrade(alembic_config(conn), "head")
    return head_revision()
