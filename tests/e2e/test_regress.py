"""`corral regress` through the real sandbox, CLI, proxy and gateway, with a scripted candidate.

Last week's window is eight human-approved tasks on a small repository, written as the state store and
audit log record finished runs. The candidate is a scripted "mixed" model: it fixes six tasks, breaks
another test on one, and tries a denied tool on another. The gate's verdicts for the better, worse,
mixed and noisy candidates on recorded outcomes are in tests/regress/test_stats.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from corral.events import CommitMade
from corral.services import Services
from corral.settings import Settings
from corral.state.machine import Phase
from tests.e2e.conftest import git, make_repo

pytestmark = pytest.mark.docker

FILES = {
    "calc/__init__.py": "",
    "calc/ops.py": "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n",
    "tests/test_ops.py": (
        "from calc.ops import add, mul\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\n"
        "def test_mul():\n    assert mul(2, 3) == 6\n"
    ),
    "secrets/key.txt": "not for the agent\n",
}
CONFIG = """\
[project]
name = "shop"
[sandbox]
hidden_paths = ["secrets/**"]
[checks]
command = "python3 -m pytest -q"
[regress]
min_tasks = 8
"""
OPS = "{workspace}/calc/ops.py"


def _edit(old: str, new: str, text: str) -> str:
    read = {"name": "Read", "input": {"file_path": OPS}}
    edit = {"name": "Edit", "input": {"file_path": OPS, "old_string": old, "new_string": new}}
    return json.dumps({"turns": [{"tool_use": [read]}, {"tool_use": [edit]}, {"text": text}]})


FIX = _edit("return a - b", "return a + b", "fixed")
BREAK = _edit(
    "a - b\n\n\ndef mul(a, b):\n    return a * b", "a + b\n\n\ndef mul(a, b):\n    return a + b", "oops"
)
DENIED = """\
turns:
  - tool_use: [{name: Read, input: {file_path: "{workspace}/secrets/key.txt"}}]
  - text: I could not read what I wanted
"""
TASKS = [f"add() subtracts; fix it (ticket {i})" for i in range(8)]
MODEL = "claude-sonnet-4-20250514"  # a model this Claude Code knows (see docs/regression.md)


def _record_window(repo: Path, settings: Settings, tasks: list[str] = TASKS) -> str:
    """Eight approved runs of last week, as corral records them: phases, checks, approval, commit."""
    base = git(repo, "rev-parse", "HEAD").strip()
    services = Services(settings)
    try:
        state, audit = services.state(), services.audit()
        state.ensure_project(name="shop", repo=str(repo), team="default", image="", config_snapshot={})
        for task in tasks:
            run = state.create_run("shop", task, str(repo), base, model="claude-sonnet-4-5-20250929")
            for phase in (Phase.PREPARING, Phase.RUNNING, Phase.CHECKING, Phase.AWAITING_APPROVAL):
                state.transition(run.run_id, phase)
            state.update_run(
                run.run_id, checks_passed=True, diffstat=" 1 file changed, 1 insertion(+), 1 deletion(-)"
            )
            recorder = audit.for_run(run.run_id)
            recorder.emit(CommitMade(commit=base, branch=run.branch, files=["calc/ops.py"]))
            recorder.close()
            state.record_approval(run.run_id, "alice", "approved")
            state.transition(run.run_id, Phase.APPROVED, "approved by alice")
            state.transition(run.run_id, Phase.MERGED, "merged")
        # A task whose base commit was rewritten away since: skipped, with its reason.
        gone = state.create_run("shop", "a task on a lost commit", str(repo), "f" * 40)
        state.transition(gone.run_id, Phase.FAILED, "old")
        state.record_approval(gone.run_id, "alice", "rejected")
    finally:
        services.close()
    return base


def test_a_mixed_candidate_lists_its_regressions_and_never_opens_a_pr(
    agent_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "shop", FILES, CONFIG)
    settings = Settings()
    _record_window(repo, settings)
    for name, text in {"fix.yaml": FIX, "break.yaml": BREAK, "denied.yaml": DENIED}.items():
        (tmp_path / name).write_text(text)
    tasks = {t: "fix.yaml" for t in TASKS}
    tasks[TASKS[2]], tasks[TASKS[5]] = "break.yaml", "denied.yaml"
    (tmp_path / "mixed.yaml").write_text(json.dumps({"model": MODEL, "tasks": tasks}))
    report_dir = tmp_path / "report"
    monkeypatch.chdir(repo)
    args = ["--epochs", "1", "--concurrency", "2", "--playbooks", str(tmp_path / "mixed.yaml")]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "corral",
            "regress",
            "--candidate",
            MODEL,
            *args,
            "--output",
            str(report_dir),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 3, proc.stderr[-3000:]  # 2 regressions of 8 single epochs: inconclusive
    data = json.loads(proc.stdout)
    analysis = data["analysis"]
    assert data["verdict"] == "inconclusive" and data["tasks"] == 8
    assert analysis["discordant"] == [2, 0]
    regressions = [key.split(":", 2)[2] for key in analysis["regressions"]]
    assert sorted(regressions) == sorted([TASKS[2], TASKS[5]])
    assert [t["task"].split(":", 2)[2] for t in data["per_task"][:2]] == regressions  # listed first
    assert data["skipped"] and "no longer exists" in data["skipped"][0]["reason"]

    by_task = {t["task"].split(":", 2)[2]: t["candidate"][0] for t in data["per_task"]}
    assert by_task[TASKS[0]]["passed"] and by_task[TASKS[0]]["same_files"] is True
    assert by_task[TASKS[2]]["checks_passed"] is False
    assert by_task[TASKS[5]]["denied"] == 1 and not by_task[TASKS[5]]["passed"]

    html = Path(data["report"]["html"]).read_text()
    assert "<svg" in html and "inconclusive" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<script" not in html

    services = Services(settings)
    try:
        state = services.state()
        (row,) = state.list_regressions("shop", MODEL)
        assert row.verdict == "inconclusive" and row.tasks == 8 and not row.partial
        candidate_runs = [r for r in state.list_runs(limit=50) if r.meta.get("mode") == "regress"]
        assert len(candidate_runs) == 8
        assert {r.phase for r in candidate_runs} == {Phase.EVALUATED}
        assert {r.model for r in candidate_runs} == {MODEL}
        assert {r.base_commit for r in candidate_runs} == {git(repo, "rev-parse", "HEAD").strip()}
        for run in candidate_runs:
            kinds = {e.kind for e in services.audit().read(run.run_id)}
            assert "pr.opened" not in kinds and "deploy.staged" not in kinds
    finally:
        services.close()

    refused = subprocess.run(
        [sys.executable, "-m", "corral", "model", "promote", MODEL], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "refusing to promote" in refused.stderr


def test_a_window_with_no_runs_has_nothing_to_compare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "empty", {"README.md": "x\n"}, CONFIG)
    monkeypatch.chdir(repo)
    proc = subprocess.run(
        [sys.executable, "-m", "corral", "regress", "--candidate", MODEL], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "nothing to compare" in proc.stdout


def test_a_crashed_candidate_run_fails_its_task_and_ctrl_c_leaves_a_partial_report(
    agent_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "shop", FILES, CONFIG)
    settings = Settings()
    tasks = TASKS[:4]
    _record_window(repo, settings, tasks)
    (tmp_path / "fix.yaml").write_text(FIX)
    # The first task's playbook is missing: that run fails to start, which fails the epoch, not the suite.
    mapping = {tasks[0]: "missing.yaml", **{t: "fix.yaml" for t in tasks[1:]}}
    (tmp_path / "c.yaml").write_text(json.dumps({"model": MODEL, "tasks": mapping}))
    monkeypatch.chdir(repo)
    args = [
        "--epochs",
        "1",
        "--playbooks",
        str(tmp_path / "c.yaml"),
        "--output",
        str(tmp_path / "r"),
        "--json",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "regress", "--candidate", MODEL, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("candidate") and "-> pass" in line:
            proc.send_signal(signal.SIGINT)  # one run done: Ctrl-C while the next is in flight
            break
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 130, stderr[-3000:]
    data = json.loads(stdout)
    assert data["partial"] is True
    assert "partial" in Path(data["report"]["html"]).read_text()
    per_task = {t["task"].split(":", 2)[2]: t for t in data["per_task"]}
    assert not per_task[tasks[0]]["candidate"][0]["passed"]
    assert "missing.yaml" in per_task[tasks[0]]["candidate"][0]["reason"]
    # No epoch is failed for the interrupt: what was scored had finished, and every fix passed.
    assert all(s["passed"] for t in tasks[1:] for s in per_task[t]["candidate"])
    not_run = [key for key, t in per_task.items() if not t["candidate"]]
    assert not_run  # Ctrl-C started no more runs: those tasks have no candidate epoch
    assert data["analysis"]["tasks"] == len(tasks) - len(not_run)
    services = Services(settings)
    try:
        (row,) = services.state().list_regressions("shop", MODEL)
        assert row.partial
        live = [r for r in services.state().list_runs(limit=50) if r.meta.get("mode") == "regress"]
        assert live and all(r.phase in (Phase.EVALUATED, Phase.FAILED) for r in live)
    finally:
        services.close()
