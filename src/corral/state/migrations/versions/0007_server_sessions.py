"""Server-side sessions of `corral server`: one row per sign-in, found by the sha256 of the random id the
signed cookie carries, so signing out (or a new password) ends a session even where its cookie was copied.
Per team, under the same row-level security as every team table.

Revision ID: 0007_server_sessions
Revises: 0006_users
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_server_sessions"
down_revision = "0006_users"
branch_labels = None
depends_on = None

APP_ROLE = "corral_app"
POLICY = "corral_team_isolation"


def upgrade() -> None:
    op.create_table(
        "server_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("team", sa.String(64), nullable=False),
        sa.Column("user_name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_reason", sa.String(32), nullable=False, server_default=""),
        sa.Index("ix_server_sessions_user", "team", "user_name"),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON server_sessions TO {APP_ROLE}")
    op.execute("ALTER TABLE server_sessions ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE server_sessions FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY {POLICY} ON server_sessions "
        "USING (team = current_setting('corral.team', true)) "
        "WITH CHECK (team = current_setting('corral.team', true))"
    )


def downgrade() -> None:
    op.drop_table("server_sessions")
