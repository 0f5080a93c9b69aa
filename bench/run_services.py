"""A run's Services in a long-lived process: its own stores (the old path) against the server's (`for_run`).

What a run submitted to `corral server` (or held by `corral worker`) pays before it can record
anything, and when it ends: the state store (`StateStore.open`: connect, Alembic's check that the
database is at head), the audit log (`AuditLog.open`: store ping, pending spools, its shipper thread)
and a Docker client (`docker.from_env` and a ping). The old path opened all three for every run;
`Services.for_run()` borrows the first two from the process's Services, opened once, and still opens
the Docker client (each run's own, for thread safety: docs/server.md).

Both paths run in the same process, interleaved, against the same corral home, whose stores are
already at head (as a server's are once it has started); one unmeasured round of each comes first, so
imports are warm for both. The baseline is the Docker client alone, which both paths pay.
With `--postgres` the state store is also measured on a fresh database of CORRAL_TEST_POSTGRES_URL
(dropped afterwards), and through CORRAL_TEST_PGBOUNCER_URL's pooler when that is set; with `--mongo`
the audit store on a fresh database of CORRAL_TEST_MONGO_URL (dropped afterwards).
Run: `python bench/run_services.py [--repeat N] [--postgres] [--mongo]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered) * 1000, 1),
        "min": round(ordered[0] * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
    }


def measure(repeat: int, state_url: str | None, audit_url: str | None = None) -> dict[str, object]:
    """Both arms against one fresh corral home (and these stores, or SQLite files in the home)."""
    os.environ["CORRAL_HOME"] = tempfile.mkdtemp(prefix="cs", dir="/tmp")
    for name, url in (("CORRAL_STATE_URL", state_url), ("CORRAL_AUDIT_URL", audit_url)):
        if url:
            os.environ[name] = url
        else:
            os.environ.pop(name, None)

    from corral.services import Services
    from corral.settings import load_settings

    server = Services(load_settings())
    start = time.perf_counter()
    server.state()  # the server's stores, opened (and migrated) once at its start
    server.audit()
    first_open = time.perf_counter() - start
    parts = ("state", "audit", "docker", "close")

    def timed(services: Services, into: dict[str, list[float]]) -> None:
        for name, step in (("state", services.state), ("audit", services.audit), ("docker", services.docker)):
            start = time.perf_counter()
            step()
            into[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        services.close()
        into["close"].append(time.perf_counter() - start)

    arms: dict[str, Callable[[], Services]] = {
        "own_stores": lambda: Services(server.settings, None, server.scope),  # the old path
        "for_run": server.for_run,
    }
    samples = {arm: {k: [] for k in parts} for arm in arms}
    for make in arms.values():  # warm-up: imports, first connections
        timed(make(), {k: [] for k in parts})
    for i in range(repeat):  # interleaved, alternating which goes first
        for arm, make in list(arms.items())[:: 1 if i % 2 == 0 else -1]:
            timed(make(), samples[arm])
    server.close()
    shutil.rmtree(os.environ["CORRAL_HOME"], ignore_errors=True)

    # Once per process: the first opens (their imports, on the first call, and a fresh home's migrations).
    result: dict[str, object] = {"server_first_open_ms": round(first_open * 1000, 1)}
    totals: dict[str, float] = {}
    for arm, got in samples.items():
        setup = [s + a + d for s, a, d in zip(got["state"], got["audit"], got["docker"], strict=True)]
        whole = [s + c for s, c in zip(setup, got["close"], strict=True)]
        result[arm] = {**{f"{k}_ms": _ms(v) for k, v in got.items()}, "setup_and_close_ms": _ms(whole)}
        totals[arm] = statistics.median(whole)
    result["ratio_own_stores_to_for_run"] = round(totals["own_stores"] / totals["for_run"], 2)
    result["saved_per_run_ms"] = round((totals["own_stores"] - totals["for_run"]) * 1000, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--postgres", action="store_true", help="also on Postgres (CORRAL_TEST_POSTGRES_URL)")
    parser.add_argument("--mongo", action="store_true", help="also with the audit on CORRAL_TEST_MONGO_URL")
    args = parser.parse_args()
    report: dict[str, object] = {"repeat": args.repeat, "load_before": [round(x, 2) for x in os.getloadavg()]}
    report["sqlite"] = measure(args.repeat, None)
    if args.postgres:
        from sqlalchemy.engine import make_url
        from state import fresh_postgres  # bench/state.py

        with fresh_postgres(os.environ["CORRAL_TEST_POSTGRES_URL"]) as url:
            report["postgres"] = measure(args.repeat, url)
            pooler = os.environ.get("CORRAL_TEST_PGBOUNCER_URL")
            if pooler:
                via = make_url(url).set(host=make_url(pooler).host, port=make_url(pooler).port)
                report["pgbouncer"] = measure(args.repeat, via.render_as_string(hide_password=False))
    if args.mongo:
        import pymongo

        name = f"corral_bench_{uuid.uuid4().hex[:8]}"
        base = os.environ["CORRAL_TEST_MONGO_URL"].rstrip("/")
        try:
            report["mongo_audit"] = measure(args.repeat, None, f"{base}/{name}")
        finally:
            with pymongo.MongoClient(base) as client:
                client.drop_database(name)
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
