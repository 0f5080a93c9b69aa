"""Regression suite and replay timing, through the real sandbox with the scripted model.

(1) A 10-task regression (one epoch, a scripted candidate that fixes each task) at concurrency 1 and
    at concurrency 4: the speed-up, and the suite's orchestration overhead per task, that is, its wall
    time at concurrency 1 minus the sum of its runs' own wall times, over the tasks (task selection,
    baseline scoring from the audit, the worker pool, the report).
(2) The demo run, then its replay from its cassette: replay time against the original's.
Run: `python bench/regress.py`. Nothing reaches a live model: the key is a canary and every run plays
a playbook or a cassette.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path

TASKS = 10
CANDIDATE = "claude-sonnet-4-20250514"
OPS = "def add(a, b):\n    return a - b\n"
TEST = "from calc.ops import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
FIX = json.dumps(
    {
        "turns": [
            {"tool_use": [{"name": "Read", "input": {"file_path": "{workspace}/calc/ops.py"}}]},
            {
                "tool_use": [
                    {
                        "name": "Edit",
                        "input": {
                            "file_path": "{workspace}/calc/ops.py",
                            "old_string": "a - b",
                            "new_string": "a + b",
                        },
                    }
                ]
            },
            {"text": "fixed"},
        ]
    }
)


def make_repo(root: Path) -> Path:
    files = {
        "calc/__init__.py": "",
        "calc/ops.py": OPS,
        "tests/test_ops.py": TEST,
        "corral.toml": '[project]\nname = "bench"\n[checks]\ncommand = "python3 -m pytest -q"\n',
        ".gitignore": "__pycache__/\n.pytest_cache/\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    git = ["git", "-C", str(root)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "i"], check=True)
    return root


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="cbr", dir="/tmp"))
    os.environ.update(CORRAL_HOME=str(work / "home"), ANTHROPIC_API_KEY="sk-ant-bench-canary-00000000")
    os.environ.pop("ANTHROPIC_BASE_URL", None)
    from corral.config import DEFAULT_CLAUDE_CODE, DEFAULT_IMAGE
    from corral.demo import DEMO_TASK, create_demo_repo, demo_playbook_path
    from corral.regress.replay import replay_run
    from corral.regress.suite import Suite, SuiteOptions
    from corral.runs import RunOrchestrator, RunRequest
    from corral.sandbox.images import docker_client, ensure_images
    from corral.services import Services
    from corral.settings import load_settings
    from corral.state.machine import Phase

    ensure_images(docker_client(), DEFAULT_CLAUDE_CODE, DEFAULT_IMAGE, progress=print)
    repo = make_repo(work / "repo")
    (work / "fix.yaml").write_text(FIX)
    (work / "candidate.yaml").write_text(json.dumps({"model": CANDIDATE, "default": "fix.yaml"}))
    services = Services(load_settings())
    try:
        state = services.state()
        base = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        state.ensure_project(name="bench", repo=str(repo), team="default", image="", config_snapshot={})
        for i in range(TASKS):
            run = state.create_run("bench", f"fix add (ticket {i})", str(repo), base)
            for phase in (Phase.PREPARING, Phase.RUNNING, Phase.CHECKING, Phase.AWAITING_APPROVAL):
                state.transition(run.run_id, phase)
            state.update_run(run.run_id, checks_passed=True)
            state.record_approval(run.run_id, "bench", "approved")
            state.transition(run.run_id, Phase.APPROVED)
            state.transition(run.run_id, Phase.MERGED)
        walls: dict[int, float] = {}
        run_sums: dict[int, float] = {}
        for concurrency in (1, 4):
            options = SuiteOptions(
                candidate=CANDIDATE,
                since=timedelta(days=1),
                epochs=1,
                concurrency=concurrency,
                playbooks=work / "candidate.yaml",
            )
            started = time.monotonic()
            suite = Suite(services, options).run()
            walls[concurrency] = time.monotonic() - started
            scores = [s for r in suite.results for s in r.candidate]
            assert len(scores) == TASKS and all(s.passed for s in scores), [s.reason for s in scores]
            run_sums[concurrency] = sum(s.wall_s for s in scores)

        demo = create_demo_repo(work / "demo")
        started = time.monotonic()
        orchestrator = RunOrchestrator(services)
        original = orchestrator.run(RunRequest(task=DEMO_TASK, repo=demo, playbook=demo_playbook_path()))
        original_s = time.monotonic() - started
        started = time.monotonic()
        report = replay_run(services, original)
        replay_s = time.monotonic() - started
        assert report.identical, report.as_json()
    finally:
        services.close()

    overhead = (walls[1] - run_sums[1]) / TASKS
    print(f"\n### Regression suite ({TASKS} tasks, 1 epoch) and replay\n")
    print("| measure | value |\n|---|---|")
    print(f"| suite wall time, concurrency 1 | {walls[1]:.1f} s |")
    print(f"| suite wall time, concurrency 4 | {walls[4]:.1f} s |")
    print(f"| speed-up 1 → 4 | {walls[1] / walls[4]:.2f}x |")
    mean_1, mean_4 = run_sums[1] / TASKS, run_sums[4] / TASKS
    print(f"| mean run wall time, concurrency 1 / 4 | {mean_1:.2f} s / {mean_4:.2f} s |")
    print(f"| orchestration overhead per task (concurrency 1) | {overhead * 1000:.0f} ms |")
    print(f"| demo run (original) | {original_s:.2f} s |")
    print(f"| its replay (run + comparison) | {replay_s:.2f} s |")
    print(f"| replay / original | {replay_s / original_s:.2f} |")


if __name__ == "__main__":
    main()
