"""State-store latency: run-record writes and reads, and preference retrieval at 10,000 preferences.

    CORRAL_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:55432/postgres \\
        /work/venv/bin/python bench/state.py [--runs 300] [--prefs 10000]

Each backend is measured against a baseline taken in the same run: one raw driver round trip
(sqlite3 / psycopg, no SQLAlchemy, no store) doing the same kind of single-row write or read.
Postgres runs in a fresh database that is dropped afterwards. Target: retrieval p50 <= 20 ms on Postgres.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from corral.settings import Settings
from corral.state import preferences as prefs
from corral.state.base import utcnow
from corral.state.db import StateStore
from corral.state.machine import Phase
from corral.state.schema import preferences

WORDS = (  # noqa: SIM905
    "invoice tax rounding decimal billing cart checkout payment refund currency ledger report "
    "export csv pdf email notification queue retry worker cron schedule cache redis session cookie "
    "login oauth token password reset migration schema index query postgres sqlite transaction lock "
    "deadlock timeout retry logging metrics tracing span alert pager oncall deploy rollback canary "
    "feature flag experiment frontend react component hook state props css layout mobile dark mode "
    "accessibility aria label translation locale timezone date parsing validation error message "
    "exception handler middleware api endpoint pagination rate limit graphql resolver dataloader "
    "webhook signature hmac secret vault docker image build ci pipeline test fixture mock coverage "
    "lint format typing mypy ruff benchmark search ranking relevance index shard replica backup "
    "restore archive upload download storage bucket"
).split()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(fn: Callable[[], object], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def sentence(rng: random.Random, lo: int, hi: int) -> str:
    """Adversarial corpus: ~200 equally likely words, so any task shares a word with half the rules."""
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."


def _pseudo_words(count: int) -> list[str]:
    rng = random.Random(11)
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    words: dict[str, None] = {}
    while len(words) < count:
        syllables = rng.randint(2, 4)
        words["".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables))] = None
    return list(words)


VOCAB = WORDS + _pseudo_words(3000)
# Zipf-like weights, flattened at the head the way dropping stop words flattens real English.
ZIPF = [1.0 / (rank + 30) for rank in range(len(VOCAB))]


def zipf_sentence(rng: random.Random, lo: int, hi: int) -> str:
    """Typical corpus: a larger vocabulary with a Zipf-like word frequency, as in written rules."""
    return " ".join(rng.choices(VOCAB, weights=ZIPF, k=rng.randint(lo, hi))).capitalize() + "."


@contextmanager
def fresh_postgres(admin_url: str) -> Iterator[str]:
    name = f"corral_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def raw_baseline(url: str, n: int) -> tuple[list[float], list[float]]:
    """One-row INSERT + COMMIT, and one SELECT by primary key, straight through the driver."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        conn: object = sqlite3.connect(parsed.database or ":memory:", isolation_level=None)
        db = conn  # type: ignore[assignment]
        db.execute("PRAGMA journal_mode=WAL")  # type: ignore[attr-defined]
        db.execute("CREATE TABLE IF NOT EXISTS bench_raw (id TEXT PRIMARY KEY, v TEXT)")  # type: ignore[attr-defined]

        def write() -> None:
            db.execute("BEGIN IMMEDIATE")  # type: ignore[attr-defined]
            db.execute("INSERT INTO bench_raw VALUES (?, ?)", (uuid.uuid4().hex, "x"))  # type: ignore[attr-defined]
            db.execute("COMMIT")  # type: ignore[attr-defined]

        def read() -> None:
            db.execute("SELECT * FROM bench_raw WHERE id = ?", ("nope",)).fetchone()  # type: ignore[attr-defined]

        result = timed(write, n), timed(read, n)
        db.close()  # type: ignore[attr-defined]
        return result
    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, prepare_threshold=None) as pg:
        pg.execute("CREATE TABLE IF NOT EXISTS bench_raw (id TEXT PRIMARY KEY, v TEXT)")
        pg.commit()

        def pg_write() -> None:
            pg.execute("INSERT INTO bench_raw VALUES (%s, %s)", (uuid.uuid4().hex, "x"))
            pg.commit()

        def pg_read() -> None:
            pg.execute("SELECT * FROM bench_raw WHERE id = %s", ("nope",)).fetchone()
            pg.commit()

        return timed(pg_write, n), timed(pg_read, n)


def seed_preferences(
    store: StateStore, project: str, count: int, rng: random.Random, make: Callable[..., str] = sentence
) -> None:
    now = utcnow()
    rows = [
        {
            "team": store.team,
            "project": project,
            "rule": make(rng, 6, 14),
            "scope_glob": rng.choice([None, None, None, f"{rng.choice(WORDS)}/**"]),
            "source_kind": rng.choice(["manual", "rejection"]),
            "source_ref": "",
            "confidence": rng.choice([0.5, 1.0]),
            "created_by": "bench",
            "created_at": now,
            "valid_from": now,
        }
        for _ in range(count)
    ]
    with store.transaction(write=True) as conn:
        for start in range(0, count, 1000):
            conn.execute(sa.insert(preferences), rows[start : start + 1000])
    if store.backend == "postgresql":
        # What autovacuum does on a live server soon after a bulk load; only the owner may ANALYZE.
        owner = sa.create_engine(store.url, isolation_level="AUTOCOMMIT")
        with owner.connect() as conn:
            conn.execute(sa.text("ANALYZE preferences"))
        owner.dispose()


def bench_backend(
    label: str, url: str, n_runs: int, n_prefs: int
) -> list[tuple[str, str, list[float], float]]:
    rng = random.Random(7)
    raw_write, raw_read = raw_baseline(url, n_runs)
    base_w, base_r = statistics.median(raw_write), statistics.median(raw_read)
    store = StateStore.open(url, Settings(), team="bench")
    try:
        store.ensure_project("shop")
        ids: list[str] = []
        create = timed(lambda: ids.append(store.create_run("shop", "task", "/r", "0" * 40).run_id), n_runs)
        it = iter(ids)
        move = timed(lambda: store.transition(next(it), Phase.PREPARING), n_runs)
        it2 = iter(ids)
        update = timed(
            lambda: store.update_run(next(it2), diffstat="a.py | 2 +-", checks_passed=True), n_runs
        )
        read = timed(lambda: store.get_run(rng.choice(ids)), n_runs)
        listing = timed(lambda: store.list_runs(limit=20), max(20, n_runs // 5))
        store.ensure_project("typical")
        seed_preferences(store, "shop", n_prefs, rng)
        seed_preferences(store, "typical", n_prefs, rng, zipf_sentence)
        tasks = [sentence(rng, 8, 20) for _ in range(200)]
        tasks_it = iter(tasks * 2)
        retrieve = timed(lambda: prefs.retrieve(store, "shop", next(tasks_it)), len(tasks))
        paths_it = iter(tasks * 2)
        scoped = timed(
            lambda: prefs.retrieve(store, "shop", next(paths_it), likely_paths=[f"{rng.choice(WORDS)}/x.py"]),
            len(tasks) // 2,
        )
        typical_tasks = iter([zipf_sentence(rng, 8, 20) for _ in range(200)])
        typical = timed(lambda: prefs.retrieve(store, "typical", next(typical_tasks)), 200)
    finally:
        store.close()
    return [
        (label, "raw driver write (baseline)", raw_write, base_w),
        (label, "create_run", create, base_w),
        (label, "transition", move, base_w),
        (label, "update_run", update, base_w),
        (label, "raw driver read (baseline)", raw_read, base_r),
        (label, "get_run", read, base_r),
        (label, "list_runs(20)", listing, base_r),
        (label, f"retrieve @ {n_prefs} typical", typical, base_r),
        (label, f"retrieve @ {n_prefs} adversarial", retrieve, base_r),
        (label, f"ret.+paths @ {n_prefs} adversar.", scoped, base_r),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--prefs", type=int, default=10_000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows += bench_backend("sqlite", f"sqlite:///{tmp}/state.db", args.runs, args.prefs)
    admin = os.environ.get("CORRAL_TEST_POSTGRES_URL")
    if admin:
        with fresh_postgres(admin) as url:
            rows += bench_backend("postgres", url, args.runs, args.prefs)
    else:
        print("CORRAL_TEST_POSTGRES_URL is not set: Postgres skipped", file=sys.stderr)
    print(f"{'backend':<9} {'operation':<32} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p50/baseline':>13}")
    for backend, name, samples, base in rows:
        p50 = statistics.median(samples)
        p95 = percentile(samples, 0.95)
        print(f"{backend:<9} {name:<32} {len(samples):>5} {p50:>8.2f} {p95:>8.2f} {p50 / base:>12.1f}x")
    print(f"\nload average during the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    for b, n, s, _ in rows:
        if b == "postgres" and n.startswith("retrieve @"):
            verdict = "meets" if statistics.median(s) <= 20 else "MISSES"
            print(f"Postgres {n}: p50 {statistics.median(s):.2f} ms ({verdict} the 20 ms target)")


if __name__ == "__main__":
    main()
