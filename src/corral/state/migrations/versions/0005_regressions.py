"""Regression suites: one summary row per `corral regress`, which `corral model promote` consults.

Team-scoped with the same row-level security policy as every other project table (0002).

Revision ID: 0005_regressions
Revises: 0004_delivery
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005_regressions"
down_revision = "0004_delivery"
branch_labels = None
depends_on = None

APP_ROLE = "corral_app"
POLICY = "corral_team_isolation"


def upgrade() -> None:
    op.create_table(
        "regressions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("team", sa.String(64), nullable=False),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("candidate", sa.String(100), nullable=False),
        sa.Column("baseline", sa.String(100), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("partial", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("tasks", sa.Integer, nullable=False, server_default="0"),
        sa.Column("epochs", sa.Integer, nullable=False, server_default="0"),
        sa.Column("summary", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("report_path", sa.Text, nullable=False, server_default=""),
        sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_regressions_candidate", "regressions", ["team", "project", "candidate", "id"])
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON regressions TO {APP_ROLE}")
    op.execute("ALTER TABLE regressions ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE regressions FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY {POLICY} ON regressions "
        "USING (team = current_setting('corral.team', true)) "
        "WITH CHECK (team = current_setting('corral.team', true))"
    )
    op.execute(
        f"DO $$ BEGIN EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO {APP_ROLE}', "
        "pg_get_serial_sequence('regressions', 'id')); END $$"
    )


def downgrade() -> None:
    op.drop_index("ix_regressions_candidate", "regressions")
    op.drop_table("regressions")
