"""Learned preferences: a rejection's feedback becomes one, retired or superseded ones stop being
injected, and retrieval ranks relevant rules above irrelevant ones."""

from __future__ import annotations

from datetime import timedelta

import pytest

from corral.errors import NotFound, StoreError
from corral.state import preferences as prefs
from corral.state.base import utcnow
from corral.state.db import StateStore
from corral.state.machine import Phase
from tests.state.conftest import PROJECT

IRRELEVANT = [
    "Write commit messages in the imperative mood.",
    "Frontend components use React function components with hooks, never classes.",
    "Keep the README quick start to two commands.",
    "Log with structlog and never print to stdout in services.",
    "Database migrations must be reversible and reviewed by the data team.",
    "Prefer pathlib over os.path for filesystem paths.",
    "CSS lives in modules next to the component that uses it.",
    "Docker images pin their base by digest.",
    "Feature flags are removed within two sprints of full rollout.",
    "Use ISO 8601 timestamps in UTC in every API response.",
    "Public HTTP endpoints need rate limits configured in the gateway.",
    "Translations go through the i18n catalogue, never hard-coded strings.",
    "Background jobs must be idempotent because the queue retries them.",
    "Secrets come from the vault; never commit a .env file.",
    "GraphQL resolvers batch their lookups with a dataloader.",
    "Mobile screens support dark mode.",
    "Each microservice owns its own database schema.",
    "Benchmarks print ratios against a baseline from the same run.",
    "Use type hints everywhere; mypy runs in strict mode.",
    "Error messages name the file and what to do next.",
    "Shell scripts start with set -euo pipefail.",
    "Keep functions shorter than fifty lines where practical.",
    "Cache invalidation events are published on the bus.",
]
RELEVANT = "Money amounts in the invoice tax calculation use Decimal with explicit rounding, never float."


def _run(store: StateStore, task: str) -> str:
    run_id = store.create_run(PROJECT, task, "/repos/shop", "0" * 40).run_id
    for phase in (Phase.PREPARING, Phase.RUNNING, Phase.CHECKING, Phase.AWAITING_APPROVAL):
        store.transition(run_id, phase)
    return run_id


def test_rejection_feedback_becomes_a_preference_for_the_next_run(store: StateStore) -> None:
    run_id = _run(store, "fix the invoice total")
    feedback = "Invoice totals must be rounded half-up to cents with Decimal, not float."
    approval = store.record_approval(run_id, "human:reviewer", "rejected", "run", feedback)
    store.transition(run_id, Phase.REJECTED, feedback)
    pref = prefs.from_rejection(store, run_id, feedback, approval.id, created_by="human:reviewer")
    assert (pref.project, pref.source_kind, pref.source_ref) == (
        PROJECT,
        "rejection",
        f"approval:{approval.id}",
    )
    assert pref.run_id == run_id and pref.confidence == prefs.CANDIDATE_CONFIDENCE and pref.rule == feedback

    chosen = prefs.retrieve(store, PROJECT, "The invoice total is off by a cent when discounts apply")
    assert [p.id for p in chosen] == [pref.id]
    section = prefs.render_prompt_section(chosen)
    assert section.startswith(prefs.SECTION_TITLE + "\n")
    assert f"[pref {pref.id}]" in section and feedback in section
    assert prefs.preference_ids(chosen) == [str(pref.id)]
    with pytest.raises(NotFound):
        prefs.from_rejection(store, "rnothere00000", "x", None)


def test_retired_superseded_and_expired_preferences_are_not_retrieved(store: StateStore) -> None:
    task = "Refactor the invoice tax calculation"
    retired = prefs.add_preference(store, PROJECT, "Invoice tax code keeps one function per jurisdiction.")
    old = prefs.add_preference(store, PROJECT, "Invoice tax rounding uses floats.", scope_glob="billing/**")
    expired = prefs.add_preference(
        store, PROJECT, "Invoice tax freeze until the audit ends.", valid_to=utcnow() + timedelta(seconds=30)
    )
    future = prefs.add_preference(
        store, PROJECT, "Invoice tax uses the 2027 rates.", valid_from=utcnow() + timedelta(days=30)
    )
    assert {p.id for p in prefs.retrieve(store, PROJECT, task)} == {retired.id, old.id, expired.id}

    prefs.retire(store, retired.id)
    new = prefs.supersede(store, old.id, "Invoice tax rounding uses Decimal, half-up.")
    later = utcnow() + timedelta(minutes=1)
    chosen = prefs.retrieve(store, PROJECT, task, now=later)
    assert [p.id for p in chosen] == [new.id]
    assert new.scope_glob == "billing/**" and new.source_ref == f"supersedes:{old.id}"
    section = prefs.render_prompt_section(chosen)
    assert f"[pref {old.id}]" not in section and f"[pref {retired.id}]" not in section
    assert prefs.get_preference(store, old.id).superseded_by == new.id
    assert future.id not in {p.id for p in prefs.list_preferences(store)}
    assert {p.id for p in prefs.list_preferences(store, include_inactive=True)} >= {
        retired.id,
        old.id,
        future.id,
    }
    with pytest.raises(StoreError, match="already superseded"):
        prefs.supersede(store, old.id, "again")
    with pytest.raises(StoreError, match="already retired"):
        prefs.retire(store, retired.id)


def test_relevance_ranks_the_relevant_rule_first_among_many(store: StateStore) -> None:
    for rule in IRRELEVANT:
        prefs.add_preference(store, PROJECT, rule)
    relevant = prefs.add_preference(store, PROJECT, RELEVANT)
    partial = prefs.add_preference(store, PROJECT, "Invoice PDFs are rendered server-side.")
    chosen = prefs.retrieve(store, PROJECT, "Fix the rounding error in the invoice tax calculation")
    assert len(IRRELEVANT) + 2 >= 20
    assert chosen[0].id == relevant.id
    assert chosen.index(next(p for p in chosen if p.id == partial.id)) > 0
    # Only rules sharing a word with the task are injected ("error" is the weak link of the third).
    assert {p.rule for p in chosen} == {
        RELEVANT,
        "Invoice PDFs are rendered server-side.",
        "Error messages name the file and what to do next.",
    }


def test_path_globs_scope_preferences_to_the_tasks_likely_files(store: StateStore) -> None:
    billing = prefs.add_preference(
        store, PROJECT, "Keep tax tables sorted by region.", scope_glob="billing/**"
    )
    web = prefs.add_preference(store, PROJECT, "Tax labels are translated.", scope_glob="frontend/**")
    general = prefs.add_preference(store, PROJECT, "Never change tax rates without a ticket.")
    unrelated_text = prefs.add_preference(
        store, PROJECT, "Regions follow ISO 3166.", scope_glob="billing/*.py"
    )
    task = "Update the tax rate for Norway"
    # Unknown likely files: globs do not filter, words decide.
    assert {p.id for p in prefs.retrieve(store, PROJECT, task)} == {billing.id, web.id, general.id}
    paths = prefs.likely_paths_from_text("Update the tax rate in billing/rates.py for Norway")
    assert paths == ["billing/rates.py"]
    chosen = prefs.retrieve(store, PROJECT, task, likely_paths=paths)
    ids = [p.id for p in chosen]
    assert web.id not in ids
    # In scope and sharing a word beats in scope alone; in scope alone still qualifies.
    assert set(ids) == {billing.id, general.id, unrelated_text.id}
    assert ids.index(billing.id) < ids.index(unrelated_text.id)


def test_retrieval_respects_the_budget_and_the_project(store: StateStore) -> None:
    store.ensure_project("blog")
    for i in range(30):
        prefs.add_preference(
            store, PROJECT, f"Checkout rule {i}: the checkout flow keeps the cart on reload."
        )
    prefs.add_preference(store, "blog", "Checkout of drafts is locked per author.")
    chosen = prefs.retrieve(store, PROJECT, "checkout cart bug", budget_chars=300)
    assert 0 < len(chosen) < 30
    assert len(prefs.render_prompt_section(chosen).splitlines()[2:]) == len(chosen)
    assert sum(len(line) + 1 for line in prefs.render_prompt_section(chosen).splitlines()[2:]) <= 300
    assert all(p.project == PROJECT for p in prefs.retrieve(store, PROJECT, "checkout drafts author"))
    assert prefs.render_prompt_section([]) == ""
    assert prefs.retrieve(store, PROJECT, "the and of") == []


def test_bad_preferences_are_refused(store: StateStore) -> None:
    with pytest.raises(StoreError, match="needs a rule"):
        prefs.add_preference(store, PROJECT, "   ")
    with pytest.raises(StoreError, match="limit"):
        prefs.add_preference(store, PROJECT, "x" * 2001)
    with pytest.raises(StoreError, match="confidence"):
        prefs.add_preference(store, PROJECT, "rule", confidence=1.5)
    with pytest.raises(StoreError, match="relative"):
        prefs.add_preference(store, PROJECT, "rule", scope_glob="/etc/**")
    with pytest.raises(NotFound):
        prefs.retire(store, 999_999)


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("billing/**", "billing/tax/rates.py", True),
        ("billing/**", "billingx/a.py", False),
        ("billing", "billing/a.py", True),
        ("*.py", "a.py", True),
        ("*.py", "src/a.py", False),
        ("**/*.py", "src/deep/a.py", True),
        ("src/?.py", "src/a.py", True),
        ("src/?.py", "src/ab.py", False),
    ],
)
def test_glob_matching(glob: str, path: str, matches: bool) -> None:
    assert prefs.glob_matches(glob, [path]) is matches


def test_relevance_holds_in_a_large_set_where_common_words_are_pruned(store: StateStore) -> None:
    import random

    import sqlalchemy as sa

    from corral.state import search
    from corral.state.schema import preferences

    rng = random.Random(3)
    filler = [
        "fix",
        "update",
        "code",
        "test",
        "file",
        "function",
        "change",
        "error",
        "bug",
        "add",
        "remove",
        "handle",
        "check",
        "module",
    ]
    now = utcnow()
    rows = [
        {
            "team": store.team,
            "project": PROJECT,
            "rule": " ".join(rng.choices(filler, k=8)),
            "source_kind": "manual",
            "confidence": 1.0,
            "created_at": now,
            "valid_from": now,
        }
        for _ in range(search.PRUNE_ABOVE + 100)
    ]
    with store.transaction(write=True) as conn:
        conn.execute(sa.insert(preferences), rows)
    relevant = prefs.add_preference(
        store, PROJECT, "Invoice tax rounding uses Decimal; fix the code with care."
    )
    chosen = prefs.retrieve(store, PROJECT, "fix the invoice tax rounding bug in the code")
    assert chosen[0].id == relevant.id


def test_scoped_preferences_in_other_directories_and_dotfiles(store: StateStore) -> None:
    ci = prefs.add_preference(store, PROJECT, "Workflows pin actions by SHA.", scope_glob=".github/**")
    anywhere = prefs.add_preference(store, PROJECT, "Python files end with a newline.", scope_glob="**/*.py")
    docs = prefs.add_preference(store, PROJECT, "Docs use sentence case.", scope_glob="docs/**")
    chosen = {
        p.id for p in prefs.retrieve(store, PROJECT, "bump it", likely_paths=["./.github/workflows/ci.yml"])
    }
    assert chosen == {ci.id}
    chosen = {p.id for p in prefs.retrieve(store, PROJECT, "bump it", likely_paths=["src/app/main.py"])}
    assert chosen == {anywhere.id}
    assert docs.id not in chosen
