"""Users of `corral server`: a name, a role (viewer, approver, admin), an argon2 password hash and the
sha256 of an API token, per team, under the same row-level security as every team table.

Revision ID: 0006_users
Revises: 0005_regressions
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_users"
down_revision = "0005_regressions"
branch_labels = None
depends_on = None

APP_ROLE = "corral_app"
POLICY = "corral_team_isolation"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("team", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False, server_default=""),
        sa.Column("token_hash", sa.String(64), nullable=True, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("team", "name", name="uq_users_team_name"),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON users TO {APP_ROLE}")
    op.execute("ALTER TABLE users ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE users FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY {POLICY} ON users "
        "USING (team = current_setting('corral.team', true)) "
        "WITH CHECK (team = current_setting('corral.team', true))"
    )
    op.execute(
        f"DO $$ BEGIN EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO {APP_ROLE}', "
        "pg_get_serial_sequence('users', 'id')); END $$"
    )


def downgrade() -> None:
    op.drop_table("users")
