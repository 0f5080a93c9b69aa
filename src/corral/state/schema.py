"""SQLAlchemy Core tables the store queries. The migrations in `migrations/versions/` create them;
this module describes them at head and must stay in step with the newest migration.

Every project-scoped table has a `team` column: row-level security keys on it on Postgres, and
every query filters on it on SQLite.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC on both backends (SQLite would otherwise hand back naive datetimes)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to the state store; pass an aware UTC time")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def json_type() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(JSONB(), "postgresql")


metadata = sa.MetaData()

TEAM_SCOPED = (
    "projects",
    "runs",
    "run_phases",
    "approvals",
    "model_pins",
    "tokens",
    "preferences",
    "regressions",
    "users",
    "server_sessions",
)

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("team", sa.String(64), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("repo", sa.Text, nullable=False, server_default=""),
    sa.Column("image", sa.Text, nullable=False, server_default=""),
    sa.Column("config_snapshot", json_type(), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("team", "name", name="uq_projects_team_name"),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("team", sa.String(64), nullable=False),
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
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("cost_usd", sa.Float, nullable=False, server_default="0"),
    sa.Column("input_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("output_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cache_read_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cache_write_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("checks", json_type(), nullable=True),
    sa.Column("checks_passed", sa.Boolean, nullable=True),
    sa.Column("result", json_type(), nullable=True),
    sa.Column("diffstat", sa.Text, nullable=False, server_default=""),
    sa.Column("container_id", sa.String(100), nullable=False, server_default=""),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("preference_ids", json_type(), nullable=False),
    sa.Column("meta", json_type(), nullable=False),
    sa.Column("requester", sa.String(200), nullable=False, server_default=""),
    sa.ForeignKeyConstraint(["team", "project"], ["projects.team", "projects.name"], name="fk_runs_project"),
    sa.Index("ix_runs_team_project_created", "team", "project", "created_at"),
    sa.Index("ix_runs_team_created", "team", "created_at"),
)

run_phases = sa.Table(
    "run_phases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("team", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False),
    sa.Column("from_phase", sa.String(32), nullable=False),
    sa.Column("to_phase", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Index("ix_run_phases_run", "run_id", "id"),
)

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("team", sa.String(64), nullable=False),
    sa.Column("project", sa.String(200), nullable=False),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("subject", sa.String(32), nullable=False),
    sa.Column("comment", sa.Text, nullable=False, server_default=""),
    sa.Column("decided_at", UTCDateTime, nullable=False),
    sa.Column("head_sha", sa.String(64), nullable=False, server_default=""),
    sa.Column("override", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_approvals_run", "run_id"),
)

model_pins = sa.Table(
    "model_pins",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("team", sa.String(64), nullable=False),
    sa.Column("project", sa.String(200), nullable=False),
    sa.Column("model", sa.String(100), nullable=False),
    sa.Column("small_model", sa.String(100), nullable=False),
    sa.Column("claude_code", sa.String(32), nullable=False),
    sa.Column("tool_surface_hash", sa.String(128), nullable=False, server_default=""),
    sa.Column("pinned_by", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("pinned_at", UTCDateTime, nullable=False),
    sa.Index("ix_model_pins_project", "team", "project", "id"),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("token_id", sa.String(64), primary_key=True),
    sa.Column("team", sa.String(64), nullable=False),
    sa.Column("project", sa.String(200), nullable=False, server_default=""),
    sa.Column("run_id", sa.String(32), nullable=False, server_default=""),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("scope", json_type(), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("max_uses", sa.Integer, nullable=True),
    sa.Column("uses", sa.Integer, nullable=False, server_default="0"),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("revoked_reason", sa.Text, nullable=False, server_default=""),
)

preferences = sa.Table(
    "preferences",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("team", sa.String(64), nullable=False),
    sa.Column("project", sa.String(200), nullable=False),
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column("scope_glob", sa.Text, nullable=True),
    sa.Column("source_kind", sa.String(32), nullable=False),
    sa.Column("source_ref", sa.Text, nullable=False, server_default=""),
    sa.Column("run_id", sa.String(32), nullable=True),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("valid_from", UTCDateTime, nullable=False),
    sa.Column("valid_to", UTCDateTime, nullable=True),
    sa.Column("superseded_by", sa.Integer, sa.ForeignKey("preferences.id"), nullable=True),
    sa.Column("retired_at", UTCDateTime, nullable=True),
    sa.Index("ix_preferences_project", "team", "project"),
)

regressions = sa.Table(
    "regressions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("team", sa.String(64), nullable=False),
    sa.Column("project", sa.String(200), nullable=False),
    sa.Column("candidate", sa.String(100), nullable=False),
    sa.Column("baseline", sa.String(100), nullable=False),
    sa.Column("verdict", sa.String(16), nullable=False),
    sa.Column("partial", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("tasks", sa.Integer, nullable=False, server_default="0"),
    sa.Column("epochs", sa.Integer, nullable=False, server_default="0"),
    sa.Column("summary", json_type(), nullable=False),
    sa.Column("report_path", sa.Text, nullable=False, server_default=""),
    sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_regressions_candidate", "team", "project", "candidate", "id"),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("team", sa.String(64), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.Text, nullable=False, server_default=""),
    sa.Column("token_hash", sa.String(64), nullable=True, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("disabled_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("team", "name", name="uq_users_team_name"),
)

server_sessions = sa.Table(
    "server_sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("team", sa.String(64), nullable=False),
    sa.Column("user_name", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("ended_reason", sa.String(32), nullable=False, server_default=""),
    sa.Index("ix_server_sessions_user", "team", "user_name"),
)
