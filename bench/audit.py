"""Audit benchmarks: hook-path overhead, shipping throughput, verification speed.

    /work/venv/bin/python bench/audit.py [--calls 2000] [--ship 50000] [--mongo-url URL]

- Hook overhead: the PreToolUse path with auditing (event build, redaction with a registered secret,
  hash chain, durable spool append with fdatasync) against the same hook with auditing off, measured
  in the same process, on ext4 under the corral home (never tmpfs: fsync must cost what it costs).
  The shipper runs in the background meanwhile, as in a real run.
- Shipping: N spooled 1 KiB events drained into SQLite and into FerretDB (CORRAL_TEST_MONGO_URL),
  events/s, with the spool already written (the shipper's own cost).
- Verification: events/s for `verify` over the stored run (read + rehash + links + checkpoints).

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from corral.audit.log import AuditLog
from corral.events import ToolCall
from corral.settings import Settings

SECRET = "sk-ant-canary-bench-0123456789abcdef"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def hook_input(i: int) -> dict[str, object]:
    return {
        "command": f"cd /workspace && pytest -q tests/test_{i}.py -k 'not slow' --maxfail=1 " + "x" * 200,
        "description": "run the tests",
        "timeout": 120000,
    }


def policy_decision(tool: str, tool_input: dict[str, object]) -> bool:
    """Stand-in for the hook's own work (the policy decision), identical in both arms."""
    command = str(tool_input.get("command", ""))
    return tool == "Bash" and "rm -rf /" not in command and not command.startswith("curl ")


def time_calls(fn: Callable[[int], None], n: int) -> list[float]:
    out: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def bench_hook(home: Path, n: int) -> dict[str, float]:
    """Time the three arms interleaved call by call, so disk noise from other work hits all equally.

    off:   the hook's own work with auditing off;
    on:    the same plus a durable audit emit (build, redact, hash, spool append, fdatasync);
    fsync: the device floor, a bare ~700-byte append and fdatasync on the same filesystem.
    """
    settings = Settings(home=home / "hook")
    audit = AuditLog.open(settings, ship_interval=0.2)
    rec = audit.for_run("bench-hook", secrets={"ANTHROPIC_API_KEY": SECRET})
    probe = os.open(home / "fsync-probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    line = b"x" * 700 + b"\n"

    def off(i: int) -> None:
        tool_input = hook_input(i)
        policy_decision("Bash", tool_input)

    def on(i: int) -> None:
        tool_input = hook_input(i)
        policy_decision("Bash", tool_input)
        rec.emit(ToolCall(tool_name="Bash", tool_call_id=f"toolu_{i:08d}", input=tool_input), durable=True)

    def fsync(_i: int) -> None:
        os.write(probe, line)
        os.fdatasync(probe)

    arms: dict[str, list[float]] = {"off": [], "on": [], "fsync": []}
    fns = {"off": off, "on": on, "fsync": fsync}
    try:
        for i in range(n + 200):  # the first 200 warm up: page cache, first checkpoint, shipper
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn(i)
                if i >= 200:
                    arms[name].append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(probe)
        rec.close()
        audit.close()
    out = {f"{name}_p{q}": percentile(v, q / 100) for name, v in arms.items() for q in (50, 99)}
    out["on_mean"] = statistics.fmean(arms["on"])
    return out


def kib_event(i: int) -> ToolCall:
    # About 1 KiB serialized, as the throughput target specifies.
    return ToolCall(tool_name="Bash", tool_call_id=f"toolu_{i:08d}", input={"command": "y" * 760})


def bench_ship(home: Path, url: str | None, n: int, label: str) -> tuple[float, float, int]:
    """Return (shipped events/s, verified events/s, bytes per event)."""
    settings = Settings(home=home / label)
    url = url or f"sqlite:///{settings.audit_db}"
    writer = AuditLog.open(settings, url, background=False)
    # Write the spool with the store unreachable, so nothing ships while writing.
    assert writer.store is not None
    writer.store.close()
    writer.store = None
    rec = writer.for_run("bench-ship")
    for i in range(n):
        rec.emit(kib_event(i))
    spool = rec.spool_path
    size = spool.stat().st_size
    rec.close()
    writer.close()
    t0 = time.perf_counter()
    reader = AuditLog.open(settings, url, background=False)  # ships the orphan spool at start
    ship_s = time.perf_counter() - t0
    assert reader.backlog() == 0
    t0 = time.perf_counter()
    report = reader.verify("bench-ship", strict=True)
    verify_s = time.perf_counter() - t0
    assert report.ok and report.events == n, report.summary()
    reader.close()
    return n / ship_s, n / verify_s, size // n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--ship", type=int, default=50_000)
    parser.add_argument("--mongo-url", default=os.environ.get("CORRAL_TEST_MONGO_URL"))
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="corral-bench-audit-", dir="/var/tmp"))
    mongo_db = f"corral_bench_{uuid.uuid4().hex[:8]}"
    try:
        hook = bench_hook(home, args.calls)
        sq_ship, sq_verify, per_event = bench_ship(home, None, args.ship, "sqlite")
        added50 = hook["on_p50"] - hook["off_p50"]
        added99 = hook["on_p99"] - hook["off_p99"]
        rows = [
            (
                "hook p50: audit off / on",
                f"{hook['off_p50']:.3f} / {hook['on_p50']:.3f} ms",
                f"added {added50:.3f} ms (target ≤ 1 ms)",
            ),
            (
                "hook p99: audit off / on",
                f"{hook['off_p99']:.3f} / {hook['on_p99']:.3f} ms",
                f"added {added99:.3f} ms (target ≤ 5 ms)",
            ),
            (
                "device floor: bare append + fdatasync",
                f"p50 {hook['fsync_p50']:.3f} / p99 {hook['fsync_p99']:.3f} ms",
                "same disk, interleaved with the arms above",
            ),
            (
                "audit cost above the device floor",
                f"p50 {hook['on_p50'] - hook['fsync_p50']:.3f} ms",
                "build + redact + hash + write",
            ),
            (f"shipping to SQLite ({per_event} B events)", f"{sq_ship:,.0f} events/s", "target ≥ 20,000/s"),
            ("verify (SQLite)", f"{sq_verify:,.0f} events/s", ""),
        ]
        if args.mongo_url:
            url = args.mongo_url.rstrip("/") + "/" + mongo_db
            n = min(args.ship, 20_000)
            fd_ship, fd_verify, _ = bench_ship(home, url, n, "ferretdb")
            rows += [
                (f"shipping to FerretDB ({n} events)", f"{fd_ship:,.0f} events/s", "target ≥ 5,000/s"),
                ("verify (FerretDB)", f"{fd_verify:,.0f} events/s", ""),
            ]
        print(
            f"audit benchmark: {args.calls} hook calls, {args.ship} shipped events, {os.cpu_count()} cores\n"
        )
        print("| measure | value | note |\n|---|---|---|")
        for name, value, note in rows:
            print(f"| {name} | {value} | {note} |")
    finally:
        if args.mongo_url:
            import pymongo

            pymongo.MongoClient(args.mongo_url).drop_database(mongo_db)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
