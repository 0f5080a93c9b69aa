"""Row-level security on every project-scoped table (Postgres only; SQLite scopes in queries).

Each policy admits a row only when its `team` equals the session setting `corral.team`, which the
store sets with `set_config('corral.team', team, true)` at the start of every transaction. An unset
setting matches nothing.

Table owners and superusers bypass RLS, so the store does not query as the owner: it switches to the
non-owner role `corral_app` (created here, NOLOGIN) per transaction. FORCE also subjects the owner to
the policies, so a session that forgets the role sees no other team's rows either. Superusers still
bypass everything; never point a team's corral at a superuser without the role switch.

Revision ID: 0002_row_level_security
Revises: 0001_initial
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0002_row_level_security"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

APP_ROLE = "corral_app"
TABLES = ("projects", "runs", "run_phases", "approvals", "model_pins", "tokens", "preferences")
SERIAL_TABLES = ("projects", "run_phases", "approvals", "model_pins", "preferences")
POLICY = "corral_team_isolation"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # Roles are cluster-wide: another database (or a concurrent migration) may have made it already.
    op.execute(
        f"""DO $$ BEGIN
              CREATE ROLE {APP_ROLE} NOLOGIN;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
            END $$"""
    )
    # The migrating user must be a member to SET ROLE; superusers need not be, but granting is harmless.
    op.execute(
        f"""DO $$ BEGIN
              EXECUTE format('GRANT {APP_ROLE} TO %I', current_user);
            EXCEPTION WHEN OTHERS THEN NULL;
            END $$"""
    )
    op.execute(
        f"DO $$ BEGIN EXECUTE format('GRANT USAGE ON SCHEMA %I TO {APP_ROLE}', current_schema()); END $$"
    )
    for table in TABLES:
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {APP_ROLE}")
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {POLICY} ON {table} "
            "USING (team = current_setting('corral.team', true)) "
            "WITH CHECK (team = current_setting('corral.team', true))"
        )
    for table in SERIAL_TABLES:
        op.execute(
            f"DO $$ BEGIN EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO {APP_ROLE}', "
            f"pg_get_serial_sequence('{table}', 'id')); END $$"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP POLICY IF EXISTS {POLICY} ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        op.execute(f"REVOKE ALL ON {table} FROM {APP_ROLE}")
