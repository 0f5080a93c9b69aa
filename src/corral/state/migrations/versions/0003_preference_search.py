"""Indexed preference search under row-level security (Postgres only).

The full-text match operator (`ts_match_vq`, behind `@@`) is not LEAKPROOF, so on a table with RLS
the planner must apply the policy first and may not use the GIN index for `@@`: every retrieval
became a scan of all preferences. Only a superuser can mark the operator leakproof (not possible on
Supabase), so the search (and the per-word counts that pick its selective words) run in SECURITY
DEFINER functions owned by the table owner, which filter on `team = current_setting('corral.team',
true)` themselves, exactly as the policy does.
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
SIGNATURES = (
    "corral_preference_search(text, text, text, timestamptz, integer)",
    "corral_preference_term_counts(text, text[])",
)
ACTIVE = """p.team = current_setting(''corral.team'', true) AND p.project = $1
                 AND p.retired_at IS NULL AND p.superseded_by IS NULL
                 AND p.valid_from <= $4 AND (p.valid_to IS NULL OR p.valid_to > $4)"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    schema = op.get_bind().exec_driver_sql("SELECT current_schema()").scalar()
    # A pinned search_path: a SECURITY DEFINER function must not resolve names through the caller's.
    path = f"SET search_path = pg_catalog, {schema}"
    op.execute("ALTER TABLE preferences NO FORCE ROW LEVEL SECURITY")
    # plpgsql EXECUTE plans the query afresh with the actual values (a LANGUAGE sql body would get
    # a generic plan that cannot see the tsquery, and ran 3 to 5 times slower).
    op.execute(
        f"""CREATE FUNCTION corral_preference_search(
              p_project text, p_select text, p_rank text, p_now timestamptz, p_limit integer)
        RETURNS TABLE (id integer, confidence double precision, scope_glob text, rule_chars integer,
                       rank real)
        LANGUAGE plpgsql STABLE SECURITY DEFINER {path} AS $fn$
        BEGIN
          RETURN QUERY EXECUTE
            'SELECT p.id, p.confidence, p.scope_glob, length(p.rule),
                    ts_rank(p.tsv, to_tsquery(''english''::regconfig, $3), 1)
             FROM preferences p
             WHERE {ACTIVE} AND p.tsv @@ to_tsquery(''english''::regconfig, $2)
             ORDER BY 5 DESC, 1 DESC
             LIMIT $5'
          USING p_project, p_select, p_rank, p_now, p_limit;
        END
        $fn$"""
    )
    # How many of the team's project preferences hold each word (the GIN index answers each count):
    # what lets retrieval select candidates by a task's rarer words.
    op.execute(
        f"""CREATE FUNCTION corral_preference_term_counts(p_project text, p_words text[])
        RETURNS TABLE (word text, n bigint)
        LANGUAGE sql STABLE SECURITY DEFINER {path} AS $fn$
          SELECT NULL::text, count(*) FROM preferences p
          WHERE p.team = current_setting('corral.team', true) AND p.project = p_project
          UNION ALL
          SELECT w.word, (SELECT count(*) FROM preferences p
                          WHERE p.tsv @@ plainto_tsquery('english'::regconfig, w.word)
                            AND p.team = current_setting('corral.team', true) AND p.project = p_project)
          FROM unnest(p_words) AS w(word)
        $fn$"""
    )
    for signature in SIGNATURES:
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {APP_ROLE}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for signature in SIGNATURES:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    op.execute("ALTER TABLE preferences FORCE ROW LEVEL SECURITY")
