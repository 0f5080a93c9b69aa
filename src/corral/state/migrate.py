"""Alembic migrations, run programmatically from the package: no alembic.ini in the repository.

`upgrade(conn)` brings a database to head inside the caller's transaction, under a lock, so two
processes opening a fresh database at once do not both create the tables. A database stamped with
a revision this corral does not know was migrated by a newer corral: it is refused, not touched.
"""

from __future__ import annotations

from functools import lru_cache

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from corral.errors import StoreError

SCRIPT_LOCATION = "corral.state:migrations"
MIGRATION_LOCK_KEY = 0x636F7272616C  # "corral": pg advisory lock id shared by every corral process


def alembic_config(conn: Connection | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _script().get_current_head()
    assert head is not None, "the packaged migrations have no head"
    return head


def known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in _script().walk_revisions())


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
    head = head_revision()
    if revision != head:
        command.upgrade(alembic_config(conn), "head")
    return head
