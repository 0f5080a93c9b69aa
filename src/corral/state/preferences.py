"""Learned preferences: rules reviewers taught the agent, retrieved for each new task.

A preference comes from a rejection's feedback (`from_rejection`), from `corral prefs add`, or from a
forge review comment. Retrieval ranks the project's active preferences by full-text relevance to the
task (Postgres `ts_rank` over a GIN-indexed tsvector, SQLite FTS5 `bm25`), weighs in confidence and
path-glob scope against the task's likely files, and keeps what fits a character budget. The result
is rendered as one clearly marked section for the agent's system prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from corral.errors import NotFound, StoreError
from corral.state import search
from corral.state.base import StoreBase, row_dict, run_not_found, utcnow
from corral.state.models import Preference, PreferenceSource
from corral.state.schema import preferences, runs
from corral.state.search import LIGHT_COLUMNS

SECTION_TITLE = "## Team preferences (corral)"
MAX_RULE_CHARS = 2000
CANDIDATE_CONFIDENCE = 0.5
"""A rejection's feedback is a candidate: injected, but ranked below rules a human wrote on purpose."""
GLOB_BONUS = 0.5

# Words too common to say anything about relevance. Postgres' english configuration drops these
# anyway; FTS5 has no stop list, and an OR query over them would match every preference.
_STOP = frozenset(
    (  # noqa: SIM905
        "a an and are as at be by do does for from has have in is it its make of on or please should so "
        "that the this to was we were will with you your not no can all any"
    ).split()
)
_WORD = re.compile(r"[a-z0-9]+")
_PATHISH = re.compile(
    r"(?<![\w/.-])((?:[\w.-]+/)+[\w.*-]+|[\w-]+\.(?:py|js|ts|tsx|go|rs|md|toml|ya?ml|json|sql))"
)


def _active(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        preferences.c.retired_at.is_(None),
        preferences.c.superseded_by.is_(None),
        preferences.c.valid_from <= now,
        sa.or_(preferences.c.valid_to.is_(None), preferences.c.valid_to > now),
    )


def _pref(row: sa.Row[Any]) -> Preference:
    data = row_dict(row)
    data.pop("rank", None)
    data.pop("tsv", None)
    return Preference.model_validate(data)


# ---- writing ----------------------------------------------------------------------------------


def add_preference(
    store: StoreBase,
    project: str,
    rule: str,
    *,
    scope_glob: str | None = None,
    source_kind: PreferenceSource = "manual",
    source_ref: str = "",
    run_id: str | None = None,
    confidence: float = 1.0,
    created_by: str = "",
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
) -> Preference:
    rule = rule.strip()
    if not rule:
        raise StoreError("a preference needs a rule: the text the agent should follow")
    if len(rule) > MAX_RULE_CHARS:
        raise StoreError(
            f"preference rule is {len(rule)} characters; the limit is {MAX_RULE_CHARS}",
            hint="state the rule in a sentence or two; link the discussion in its source instead",
        )
    if not 0.0 <= confidence <= 1.0:
        raise StoreError(f"preference confidence {confidence} must be between 0 and 1")
    if scope_glob is not None:
        scope_glob = scope_glob.strip() or None
        if scope_glob is not None and (scope_glob.startswith("/") or ".." in scope_glob.split("/")):
            raise StoreError(
                f"preference scope {scope_glob!r} must be a glob relative to the repository root"
            )
    now = utcnow()
    start = valid_from or now
    if valid_to is not None and valid_to <= start:
        raise StoreError(f"preference valid_to {valid_to} is not after valid_from {start}")
    with store.transaction(write=True) as conn:
        row = conn.execute(
            sa.insert(preferences)
            .values(
                team=store.team,
                project=project,
                rule=rule,
                scope_glob=scope_glob,
                source_kind=source_kind,
                source_ref=source_ref,
                run_id=run_id,
                confidence=confidence,
                created_by=created_by,
                created_at=now,
                valid_from=start,
                valid_to=valid_to,
            )
            .returning(*preferences.c)
        ).one()
    return _pref(row)


def from_rejection(
    store: StoreBase, run_id: str, feedback: str, approval_id: int | None, *, created_by: str = ""
) -> Preference:
    """A rejection's feedback, kept as a candidate preference of the run's project."""
    with store.transaction() as conn:
        project = conn.execute(
            sa.select(runs.c.project).where(runs.c.team == store.team, runs.c.run_id == run_id)
        ).scalar()
    if project is None:
        raise run_not_found(run_id, store.team)
    return add_preference(
        store,
        project,
        feedback,
        source_kind="rejection",
        source_ref=f"approval:{approval_id}" if approval_id is not None else f"run:{run_id}",
        run_id=run_id,
        confidence=CANDIDATE_CONFIDENCE,
        created_by=created_by,
    )


def get_preference(store: StoreBase, pref_id: int) -> Preference:
    with store.transaction() as conn:
        row = conn.execute(
            sa.select(preferences).where(preferences.c.team == store.team, preferences.c.id == pref_id)
        ).first()
    if row is None:
        raise NotFound(f"no preference {pref_id} in team {store.team!r}", hint="see `corral prefs list`")
    return _pref(row)


def list_preferences(
    store: StoreBase, project: str | None = None, *, include_inactive: bool = False
) -> list[Preference]:
    query = sa.select(preferences).where(preferences.c.team == store.team)
    if project is not None:
        query = query.where(preferences.c.project == project)
    if not include_inactive:
        query = query.where(_active(utcnow()))
    with store.transaction() as conn:
        return [_pref(r) for r in conn.execute(query.order_by(preferences.c.id)).all()]


def _end(store: StoreBase, pref_id: int, values: dict[str, Any]) -> Preference:
    current = get_preference(store, pref_id)
    if not current.is_active(utcnow()):
        state = "superseded" if current.superseded_by is not None else "retired or expired"
        raise StoreError(f"preference {pref_id} is already {state}", hint="see `corral prefs list --all`")
    with store.transaction(write=True) as conn:
        row = conn.execute(
            sa.update(preferences)
            .where(preferences.c.team == store.team, preferences.c.id == pref_id)
            .values(**values)
            .returning(*preferences.c)
        ).one()
    return _pref(row)


def retire(store: StoreBase, pref_id: int) -> Preference:
    """Stop injecting a preference; it stays on record."""
    now = utcnow()
    return _end(store, pref_id, {"retired_at": now, "valid_to": now})


def supersede(
    store: StoreBase, old_id: int, new_rule: str, *, scope_glob: str | None = None, created_by: str = ""
) -> Preference:
    """Replace a preference with a new rule (same project, scope unless given); returns the new one."""
    old = get_preference(store, old_id)
    new = add_preference(
        store,
        old.project,
        new_rule,
        scope_glob=scope_glob if scope_glob is not None else old.scope_glob,
        source_kind="manual",
        source_ref=f"supersedes:{old.id}",
        run_id=old.run_id,
        confidence=1.0,
        created_by=created_by,
    )
    _end(store, old_id, {"superseded_by": new.id, "valid_to": new.created_at})
    return new


# ---- retrieval --------------------------------------------------------------------------------


def query_words(text: str) -> list[str]:
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in _STOP and len(word) > 1:
            seen.setdefault(word, None)
    return list(seen)[:64]


def likely_paths_from_text(text: str) -> list[str]:
    """Paths a task names outright (`src/billing/tax.py`, `README.md`): a cheap hint for scoping."""
    return list(dict.fromkeys(m.group(1).strip(".") for m in _PATHISH.finditer(text)))


@lru_cache(maxsize=512)
def _glob_regex(glob: str) -> re.Pattern[str]:
    """`**` spans directories, `*` and `?` stay within one; a bare directory covers what is below it."""
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out) + "(?:/.*)?$")


def _relative(path: str) -> str:
    return path.removeprefix("./").lstrip("/")


def glob_matches(glob: str, paths: list[str]) -> bool:
    pattern = _glob_regex(glob.strip("/"))
    return any(pattern.match(_relative(path)) for path in paths)


@dataclass(frozen=True, slots=True)
class _Candidate:
    """What ranking needs of a preference, without fetching (and validating) the whole row."""

    id: int
    confidence: float
    scope_glob: str | None
    rule_chars: int
    text_score: float = 0.0

    def line_chars(self) -> int:
        """An upper bound of its rendered line's length (the line collapses whitespace)."""
        scope = len(f" (applies to {self.scope_glob})") if self.scope_glob else 0
        return len(f"- [pref {self.id}] ") + scope + self.rule_chars + 1


def _rank(candidates: dict[int, _Candidate], likely_paths: list[str] | None) -> list[_Candidate]:
    scored: list[tuple[float, _Candidate]] = []
    for cand in candidates.values():
        weight = 0.5 + 0.5 * cand.confidence
        score = cand.text_score * weight
        if likely_paths and cand.scope_glob is not None:
            if not glob_matches(cand.scope_glob, likely_paths):
                continue
            score += GLOB_BONUS * weight
        scored.append((score, cand))
    scored.sort(key=lambda item: (-item[0], -item[1].confidence, -item[1].id))
    return [cand for _score, cand in scored]


def retrieve(
    store: StoreBase,
    project: str,
    task_text: str,
    likely_paths: list[str] | None = None,
    budget_chars: int = 2000,
    *,
    now: datetime | None = None,
) -> list[Preference]:
    """The project's most relevant active preferences for a task, best first, within `budget_chars`.

    A preference qualifies when its rule shares a (stemmed) word with the task, or when its path glob
    matches one of `likely_paths`. When `likely_paths` is known, a preference scoped to other paths
    is left out however well its words match. Ranking runs on light rows (id, confidence, glob,
    length); only the chosen preferences are fetched whole.
    """
    now = now or utcnow()
    words = query_words(task_text)
    scope = sa.and_(preferences.c.team == store.team, preferences.c.project == project, _active(now))
    candidates: dict[int, _Candidate] = {}
    with store.transaction() as conn:
        select_by = search.selective_words(conn, project, words)
        active = _active(now)
        rows = (
            search.text_candidates(conn, store.team, project, now, active, select_by, words)
            if select_by
            else []
        )
        top = max((float(r.rank) for r in rows), default=0.0) or 1.0
        for r in rows:
            candidates[r.id] = _Candidate(
                r.id, r.confidence, r.scope_glob, r.rule_chars, max(r.rank, 0.0) / top
            )
        if likely_paths:
            scoped = conn.execute(
                sa.select(*LIGHT_COLUMNS).where(scope, search.glob_may_match(conn, likely_paths))
            )
            for light in scoped:
                candidates.setdefault(
                    light.id, _Candidate(light.id, light.confidence, light.scope_glob, light.rule_chars)
                )
        chosen: list[int] = []
        used = 0
        for cand in _rank(candidates, likely_paths):
            if used + cand.line_chars() <= budget_chars:
                chosen.append(cand.id)
                used += cand.line_chars()
        if not chosen:
            return []
        full = {
            r.id: _pref(r) for r in conn.execute(sa.select(preferences).where(preferences.c.id.in_(chosen)))
        }
    return [full[i] for i in chosen if i in full]


# ---- the prompt section -----------------------------------------------------------------------


def _line(pref: Preference) -> str:
    scope = f" (applies to {pref.scope_glob})" if pref.scope_glob else ""
    rule = " ".join(pref.rule.split())
    return f"- [pref {pref.id}]{scope} {rule}"


def render_prompt_section(prefs: list[Preference]) -> str:
    """The system-prompt section listing `prefs`, or "" when there are none."""
    if not prefs:
        return ""
    lines = [
        SECTION_TITLE,
        "Reviewers of this project asked for the following. Follow them unless the task says "
        "otherwise; each is tagged with its id.",
        *(_line(p) for p in prefs),
    ]
    return "\n".join(lines) + "\n"


def preference_ids(prefs: list[Preference]) -> list[str]:
    """The ids as the `prefs.injected` audit event carries them."""
    return [str(p.id) for p in prefs]
