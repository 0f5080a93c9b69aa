"""Indexed preference search under row-level security (Postgres only).

The full-text match operator (`ts_match_vq`, behind `@@`) is not LEAKPROOF, so on a table with RLS
the planner must apply the policy first and may not use the GIN index for `@@`: every retrieval
became a scan of all preferences. Only a superuser can mark the operator leakproof (not possible on
Supabase), so the search runs in two SECURITY DEFINER functions owned by the table owner, which
filter on `team = current_setting('corral.team', true)` themselves, exactly as the policy does.
Owners bypass RLS only when it is not FORCEd, so `preferences` drops FORCE (RLS stays enabled, and
`corral_app` sessions remain bound by the policy for every direct query).

Revision ID: 0003_preference_search
Revises: 0002_row_level_security
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0003_preference_search"
down_revision = "0002_row_level_security"
branch_labels = None
depends_on = None

APP_ROLE = "corral_app"
ACTIVE = """p.team = current_setting('corral.team', true) AND p.project = p_project
    AND p.retired_at IS NULL AND p.superseded_by IS NULL
    AND p.valid_from <= p_now AND (p.valid_to IS NULL OR p.valid_to > p_now)"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    schema = op.get_bind().exec_driver_sql("SELECT current_schema()").scalar()
    # A pinned search_path: a SECURITY DEFINER function must not resolve names through the caller's.
    path = f"SET search_path = pg_catalog, {schema}"
    op.execute("ALTER TABLE preferences NO FORCE ROW LEVEL SECURITY")
    op.execute(
        f"""CREATE FUNCTION corral_preference_term_counts(p_project text, p_words text[], p_now timestamptz)
        RETURNS TABLE (word text, n bigint)
        LANGUAGE sql STABLE SECURITY DEFINER {path} AS $$
          SELECT NULL::text, count(*) FROM preferences p WHERE {ACTIVE}
          UNION ALL
          SELECT w.word, (SELECT count(*) FROM preferences p
                          WHERE {ACTIVE} AND p.tsv @@ plainto_tsquery('english'::regconfig, w.word))
          FROM unnest(p_words) AS w(word)
        $$"""
    )
    op.execute(
        f"""CREATE FUNCTION corral_preference_search(
              p_project text, p_select text, p_rank text, p_now timestamptz, p_limit integer)
        RETURNS TABLE (id integer, confidence double precision, scope_glob text, rule_chars integer,
                       rank real)
        LANGUAGE sql STABLE SECURITY DEFINER {path} AS $$
          SELECT p.id, p.confidence, p.scope_glob, length(p.rule),
                 ts_rank(p.tsv, to_tsquery('english'::regconfig, p_rank), 1)
          FROM preferences p
          WHERE {ACTIVE} AND p.tsv @@ to_tsquery('english'::regconfig, p_select)
          ORDER BY 5 DESC, p.id DESC
          LIMIT p_limit
        $$"""
    )
    for signature in (
        "corral_preference_term_counts(text, text[], timestamptz)",
        "corral_preference_search(text, text, text, timestamptz, integer)",
    ):
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {APP_ROLE}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION IF EXISTS corral_preference_search(text, text, text, timestamptz, integer)")
    op.execute("DROP FUNCTION IF EXISTS corral_preference_term_counts(text, text[], timestamptz)")
    op.execute("ALTER TABLE preferences FORCE ROW LEVEL SECURITY")
