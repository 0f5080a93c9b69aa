"""Mutation score of the security core, per module, against a floor (`make mutation`).

Runs mutmut (configured in pyproject.toml `[tool.mutmut]`) from a fresh `mutants/` copy, reads every
mutant's status from `mutmut results --all true`, and prints one line per mutated file. Exits 1 when a
module scores below the floor, or when mutmut itself fails, so it can gate a change.

A mutant counts as killed when a test failed on it, it timed out, or the type checker rejected it; a
`no tests` mutant (no selected test calls that function) counts as surviving: nothing guards it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KILLED = {"killed", "timeout", "caught by type check"}
NOT_COUNTED = {"skipped"}
_LINE = re.compile(r"^\s*(?P<name>[\w.ǁ]+)__mutmut_\d+: (?P<status>.+?)\s*$")


def modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return [str(p) for p in config["only_mutate"]]


def module_of(mutant: str, files: list[str]) -> str | None:
    """`corral.audit.chain.xǁEventRowǁpayload` -> `src/corral/audit/chain.py`."""
    dotted = mutant.split(".x", 1)[0] if ".x_" in mutant or ".xǁ" in mutant else mutant
    for path in files:
        if dotted == path.removeprefix("src/").removesuffix(".py").replace("/", "."):
            return path
    return None


def statuses(files: list[str]) -> dict[str, Counter[str]]:
    mutmut = Path(sys.executable).with_name("mutmut")
    out = subprocess.run(
        [str(mutmut), "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    by_module: dict[str, Counter[str]] = {path: Counter() for path in files}
    for line in out.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        path = module_of(m["name"], files)
        if path is not None:
            by_module[path][m["status"]] += 1
    return by_module


def score(counts: Counter[str]) -> float:
    counted = sum(n for status, n in counts.items() if status not in NOT_COUNTED)
    killed = sum(counts[status] for status in KILLED)
    return 100.0 * killed / counted if counted else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floor", type=float, default=90.0, help="lowest score per module, in %%")
    parser.add_argument("--reuse", action="store_true", help="keep mutants/ and mutmut's cached results")
    parser.add_argument("--report-only", action="store_true", help="read the last run's results only")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    files = modules()
    started = time.monotonic()
    if not args.report_only:
        if not args.reuse:
            shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        log = ROOT / "mutants.log"
        with open(log, "w") as f:
            run = subprocess.run(
                [str(Path(sys.executable).with_name("mutmut")), "run", "--max-children", str(args.jobs)],
                cwd=ROOT,
                stdout=f,
                stderr=subprocess.STDOUT,
            )
        if run.returncode != 0:
            print(f"mutmut run failed (exit {run.returncode}); see {log}", file=sys.stderr)
            return 1
    by_module = statuses(files)
    failed = False
    print(f"{'module':<32} {'mutants':>7} {'killed':>6} {'survived':>8} {'no tests':>8} {'score':>6}")
    for path, counts in by_module.items():
        total = sum(counts.values())
        s = score(counts)
        low = total == 0 or s < args.floor
        failed |= low
        print(
            f"{path.removeprefix('src/corral/'):<32} {total:>7} {sum(counts[k] for k in KILLED):>6} "
            f"{counts['survived']:>8} {counts['no tests']:>8} {s:>5.1f}%{'  < floor' if low else ''}"
        )
    if not args.report_only:
        print(f"mutation run: {time.monotonic() - started:.0f} s with {args.jobs} workers")
    if failed:
        print(
            f"FAILED: a module scores below {args.floor:.0f}%. `.venv/bin/mutmut results` lists the "
            "survivors, `.venv/bin/mutmut show NAME` shows one; kill it with a behavioural test.",
            file=sys.stderr,
        )
        return 1
    print(f"every module scores at least {args.floor:.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
