"""Delivery benchmark: wall time from `corral approve` to merged and to staged, on the demo.

    .venv/bin/python bench/delivery.py [--runs 3]

Each round makes a fresh demo repository with a `[deploy]` that builds a static page, runs the demo
task to awaiting_approval (real sandbox, scripted model), clones the repository, and then measures in
the same process:
- a plain `git merge --no-ff` of the run branch in the clone (the baseline for "merged");
- `corral approve` (the library call the CLI makes): the refusal checks, the approval, the pull request,
  the hardened merge (merge-tree, commit-tree, update-ref, the checkout's working tree), and then the
  build in a fresh sandbox and the preview server. "merged" and "staged" are read from the run's
  phase changes in its audit chain, relative to the start of the call.
Prints a markdown table (median and max over the rounds).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from corral.delivery.approve import approve
from corral.demo import DEMO_CONFIG, DEMO_TASK, demo_playbook_path, write_demo_repo
from corral.runs import RunOrchestrator, RunRequest
from corral.services import Services
from corral.settings import Settings

DEPLOY = """
[deploy]
build = "mkdir -p dist && cp README.md dist/index.html"
output = "dist"
"""


def git(repo: Path, *args: str) -> str:
    cmd = ["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@b", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def one_round(root: Path, settings: Settings) -> tuple[float, float, float]:
    repo = root / "demo"
    repo.mkdir(parents=True)
    write_demo_repo(repo)
    (repo / "corral.toml").write_text(DEMO_CONFIG + DEPLOY)
    (repo / ".gitignore").write_text("__pycache__/\n.pytest_cache/\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    os.environ["CORRAL_USER"] = "requester@example.com"
    services = Services(settings)
    try:
        run_id = RunOrchestrator(services).run(RunRequest(DEMO_TASK, repo, demo_playbook_path()))
        assert services.state().get_run(run_id).phase == "awaiting_approval"
        clone = root / "clone"
        subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
        git(clone, "fetch", "-q", "origin", f"corral/{run_id}:corral/{run_id}")
        t0 = time.perf_counter()
        git(clone, "merge", "--no-ff", "-q", "-m", "merge", f"corral/{run_id}")
        plain = time.perf_counter() - t0

        started = datetime.now(UTC)
        done = approve(services, run_id, approver="approver@example.com")
        assert done.phase == "staged", done
        phases = {e.to_phase: e.ts for e in services.audit().read(run_id) if e.kind == "run.phase"}
        merged = (phases["merged"] - started).total_seconds()
        staged = (phases["staged"] - started).total_seconds()
    finally:
        services.close()
    return plain, merged, staged


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cb", dir="/tmp"))
    os.environ["CORRAL_HOME"] = str(home)
    settings = Settings()
    rows: list[tuple[float, float, float]] = []
    try:
        for i in range(args.runs):
            rows.append(one_round(home / f"round{i}", settings))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    plain, merged, staged = (sorted(col) for col in zip(*rows, strict=True))
    print(f"| step ({args.runs} rounds) | median | max |")
    print("|---|---|---|")
    for name, values in (
        ("plain `git merge --no-ff` of the run branch", plain),
        ("`corral approve` → merged", merged),
        ("`corral approve` → staged (build in a sandbox + preview served)", staged),
    ):
        print(f"| {name} | {statistics.median(values) * 1000:.0f} ms | {max(values) * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
