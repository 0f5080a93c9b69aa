"""Full-text search over preferences: Postgres `ts_rank` over the GIN-indexed `tsv` column (through
the SECURITY DEFINER functions of migration 0003, so the index works under row-level security),
SQLite FTS5 `bm25`.

An OR query over every word of a task matches a large share of a big preference set, and ranking all
of those rows is what costs time. So, as search engines do with common terms, once a project has more
than `PRUNE_ABOVE` preferences the rows are *selected* by the task's selective words (those in at
most `COMMON_FRACTION` of them, or failing that its `MIN_WORDS` rarest ones) and, on Postgres,
*ranked* by all of its words. A rule that shares only very common words with a task is a weak match.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from corral.state.schema import preferences

TEXT_CANDIDATES = 200
COMMON_FRACTION = 0.05
MIN_WORDS = 3
MAX_WORDS = 24
"""Each word costs a count; a task's first two dozen distinct words say what it is about."""
PRUNE_ABOVE = 1000
"""Below this many preferences in a project every shared word selects: ranking them all is cheap."""

LIGHT_COLUMNS = (
    preferences.c.id,
    preferences.c.confidence,
    preferences.c.scope_glob,
    sa.func.length(preferences.c.rule).label("rule_chars"),
)
_FTS = sa.table("preferences_fts", sa.column("rowid"))


def _fts_match(words: list[str]) -> sa.ColumnElement[bool]:
    match = " OR ".join(f'"{w}"' for w in words)
    return sa.literal_column("preferences_fts").op("MATCH")(match)


def _counts(conn: Connection, project: str, words: list[str]) -> tuple[int, dict[str, int]]:
    """(how many preferences, how many contain each word).

    Postgres counts the team's project through the GIN index (migration 0003's function). SQLite
    counts over the whole FTS index: joining FTS5 to a filter inside a subquery makes SQLite run the
    MATCH once per row, and an embedded store mostly holds one team's project anyway.
    """
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            sa.text("SELECT word, n FROM corral_preference_term_counts(:project, :words)"),
            {"project": project, "words": words},
        ).all()
        return next(int(r.n) for r in rows if r.word is None), {r.word: int(r.n) for r in rows if r.word}
    counts = [
        sa.select(sa.func.count()).select_from(_FTS).where(_fts_match([w])).scalar_subquery().label(f"w{i}")
        for i, w in enumerate(words)
    ]
    all_rows = sa.select(sa.func.count()).select_from(_FTS).scalar_subquery().label("total")
    row = conn.execute(sa.select(all_rows, *counts)).one()
    return int(row.total), {w: int(row[i + 1]) for i, w in enumerate(words)}


def selective_words(conn: Connection, project: str, words: list[str]) -> list[str]:
    """The words to select candidates by: all the present ones for a small project; for a big one
    the rare ones, or at least the `MIN_WORDS` rarest present."""
    words = words[:MAX_WORDS]
    if not words:
        return []
    total, freq = _counts(conn, project, words)
    present = sorted((w for w in words if freq.get(w, 0) > 0), key=lambda w: freq[w])
    if total <= PRUNE_ABOVE:
        return present
    rare = [w for w in present if freq[w] <= COMMON_FRACTION * total]
    return present[: max(len(rare), MIN_WORDS)]


def text_candidates(
    conn: Connection,
    team: str,
    project: str,
    now: datetime,
    active: sa.ColumnElement[bool],
    select_by: list[str],
    rank_by: list[str],
) -> list[Any]:
    """Light rows (id, confidence, scope_glob, rule_chars, rank), best first: the active preferences
    containing any of `select_by`, ranked by all of `rank_by` (Postgres; FTS5's bm25 ranks by the
    MATCH expression, so by `select_by`, with IDF weighting)."""
    if conn.dialect.name == "postgresql":
        return list(
            conn.execute(
                sa.text("SELECT * FROM corral_preference_search(:project, :select_by, :rank_by, :now, :n)"),
                {
                    "project": project,
                    "select_by": " | ".join(select_by),
                    "rank_by": " | ".join(rank_by),
                    "now": now,
                    "n": TEXT_CANDIDATES,
                },
            ).all()
        )
    rank = (-sa.func.bm25(sa.literal_column("preferences_fts"))).label("rank")
    query = (
        sa.select(*LIGHT_COLUMNS, rank)
        .join(_FTS, _FTS.c.rowid == preferences.c.id)
        .where(preferences.c.team == team, preferences.c.project == project, active, _fts_match(select_by))
        .order_by(sa.desc("rank"), preferences.c.id.desc())
        .limit(TEXT_CANDIDATES)
    )
    return list(conn.execute(query).all())


def glob_may_match(conn: Connection, paths: list[str]) -> sa.ColumnElement[bool]:
    """A cheap SQL prefilter for scoped preferences that may match `paths`: the glob's first path
    segment is one of the paths' first segments, or holds a wildcard. The exact match is Python's."""
    glob = preferences.c.scope_glob
    if conn.dialect.name == "postgresql":
        first = sa.func.split_part(glob, "/", 1)
    else:
        first = sa.func.substr(glob, 1, sa.func.instr(glob + "/", "/") - 1)
    firsts = sorted({p.removeprefix("./").lstrip("/").split("/", 1)[0] for p in paths})
    wildcard = sa.or_(*(first.contains(c, autoescape=True) for c in "*?["))
    return sa.and_(glob.is_not(None), sa.or_(first.in_(firsts), wildcard))
