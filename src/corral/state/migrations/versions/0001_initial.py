"""Initial state schema: projects, runs and their phase history, approvals, model pins, capability
tokens, learned preferences, and full-text search over preferences (Postgres tsvector + GIN,
SQLite FTS5).

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(JSONB(), "postgresql")


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _team() -> sa.Column[object]:
    return sa.Column("team", sa.String(64), nullable=False)


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _team(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("repo", sa.Text, nullable=False, server_default=""),
        sa.Column("image", sa.Text, nullable=False, server_default=""),
        sa.Column("config_snapshot", _json(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.UniqueConstraint("team", "name", name="uq_projects_team_name"),
    )
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(32), primary_key=True),
        _team(),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("repo", sa.Text, nullable=False),
        sa.Column("base_commit", sa.String(64), nullable=False),
        sa.Column("branch", sa.String(255), nullable=False),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("failure_reason", sa.Text, nullable=False, server_default=""),
        sa.Column("model", sa.String(100), nullable=False, server_default=""),
        sa.Column("small_model", sa.String(100), nullable=False, server_default=""),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
        sa.Column("cost_usd", sa.Float, nullable=False, server_default="0"),
        sa.Column("input_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("output_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cache_read_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cache_write_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("checks", _json(), nullable=True),
        sa.Column("checks_passed", sa.Boolean, nullable=True),
        sa.Column("result", _json(), nullable=True),
        sa.Column("diffstat", sa.Text, nullable=False, server_default=""),
        sa.Column("container_id", sa.String(100), nullable=False, server_default=""),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("preference_ids", _json(), nullable=False),
        sa.Column("meta", _json(), nullable=False),
        sa.ForeignKeyConstraint(
            ["team", "project"], ["projects.team", "projects.name"], name="fk_runs_project"
        ),
    )
    op.create_index("ix_runs_team_project_created", "runs", ["team", "project", "created_at"])
    op.create_index("ix_runs_team_created", "runs", ["team", "created_at"])
    op.create_table(
        "run_phases",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _team(),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False),
        sa.Column("from_phase", sa.String(32), nullable=False),
        sa.Column("to_phase", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        _ts("at"),
    )
    op.create_index("ix_run_phases_run", "run_phases", ["run_id", "id"])
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _team(),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(32), nullable=False),
        sa.Column("comment", sa.Text, nullable=False, server_default=""),
        _ts("decided_at"),
    )
    op.create_index("ix_approvals_run", "approvals", ["run_id"])
    op.create_table(
        "model_pins",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _team(),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("small_model", sa.String(100), nullable=False),
        sa.Column("claude_code", sa.String(32), nullable=False),
        sa.Column("tool_surface_hash", sa.String(128), nullable=False, server_default=""),
        sa.Column("pinned_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        _ts("pinned_at"),
    )
    op.create_index("ix_model_pins_project", "model_pins", ["team", "project", "id"])
    op.create_table(
        "tokens",
        sa.Column("token_id", sa.String(64), primary_key=True),
        _team(),
        sa.Column("project", sa.String(200), nullable=False, server_default=""),
        sa.Column("run_id", sa.String(32), nullable=False, server_default=""),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("scope", _json(), nullable=False),
        _ts("created_at"),
        _ts("expires_at"),
        sa.Column("max_uses", sa.Integer, nullable=True),
        sa.Column("uses", sa.Integer, nullable=False, server_default="0"),
        _ts("revoked_at", nullable=True),
        sa.Column("revoked_reason", sa.Text, nullable=False, server_default=""),
    )
    op.create_table(
        "preferences",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _team(),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("scope_glob", sa.Text, nullable=True),
        sa.Column("source_kind", sa.String(32), nullable=False),
        sa.Column("source_ref", sa.Text, nullable=False, server_default=""),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
        _ts("created_at"),
        _ts("valid_from"),
        _ts("valid_to", nullable=True),
        sa.Column("superseded_by", sa.Integer, sa.ForeignKey("preferences.id"), nullable=True),
        _ts("retired_at", nullable=True),
    )
    op.create_index("ix_preferences_project", "preferences", ["team", "project"])
    if op.get_bind().dialect.name == "postgresql":
        _postgres_fts()
    else:
        _sqlite_fts()


def _postgres_fts() -> None:
    # A stored generated column keeps the tsvector in step with the rule without triggers; the GIN
    # index serves `tsv @@ query`. The glob's words count too ("billing/**" matches a billing task).
    op.execute(
        "ALTER TABLE preferences ADD COLUMN tsv tsvector GENERATED ALWAYS AS "
        "(to_tsvector('english'::regconfig, rule || ' ' || coalesce(scope_glob, ''))) STORED"
    )
    op.execute("CREATE INDEX ix_preferences_tsv ON preferences USING gin (tsv)")


def _sqlite_fts() -> None:
    # External-content FTS5 table over preferences, kept in step by triggers. The porter tokenizer
    # stems like Postgres' 'english' configuration, so both backends match "tests" to "testing".
    op.execute(
        "CREATE VIRTUAL TABLE preferences_fts USING fts5(rule, scope_glob, content='preferences', "
        "content_rowid='id', tokenize='porter unicode61')"
    )
    op.execute(
        "CREATE TRIGGER preferences_fts_ai AFTER INSERT ON preferences BEGIN "
        "INSERT INTO preferences_fts(rowid, rule, scope_glob) "
        "VALUES (new.id, new.rule, coalesce(new.scope_glob, '')); END"
    )
    op.execute(
        "CREATE TRIGGER preferences_fts_ad AFTER DELETE ON preferences BEGIN "
        "INSERT INTO preferences_fts(preferences_fts, rowid, rule, scope_glob) "
        "VALUES ('delete', old.id, old.rule, coalesce(old.scope_glob, '')); END"
    )
    op.execute(
        "CREATE TRIGGER preferences_fts_au AFTER UPDATE OF rule, scope_glob ON preferences BEGIN "
        "INSERT INTO preferences_fts(preferences_fts, rowid, rule, scope_glob) "
        "VALUES ('delete', old.id, old.rule, coalesce(old.scope_glob, '')); "
        "INSERT INTO preferences_fts(rowid, rule, scope_glob) "
        "VALUES (new.id, new.rule, coalesce(new.scope_glob, '')); END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute("DROP TABLE IF EXISTS preferences_fts")
    for table in ("preferences", "tokens", "model_pins", "approvals", "run_phases", "runs", "projects"):
        op.drop_table(table)
