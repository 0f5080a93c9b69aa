"""The CLI a newcomer uses after the demo: init, doctor, runs, show, audit show/verify/export, gc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from corral.demo import DEMO_CONFIG, DEMO_FILES, DEMO_TASK, demo_playbook_path
from corral.settings import Settings
from tests.e2e.conftest import make_repo, run_task, stored_run

pytestmark = pytest.mark.docker


def corral(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "corral", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_init_writes_a_config_that_loads_and_refuses_to_overwrite(tmp_path: Path) -> None:
    corral("init", "--repo", str(tmp_path))
    text = (tmp_path / "corral.toml").read_text()
    assert "aliases are refused" in text and f'name = "{tmp_path.name}"' in text
    again = corral("init", "--repo", str(tmp_path), ok=False)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_doctor_reports_every_component(agent_image: str, tmp_path: Path) -> None:
    report = {c["name"]: c for c in json.loads(corral("doctor", "--repo", str(tmp_path), "--json").stdout)}
    assert {"config", "claude code", "docker", "runtime", "image", "state", "audit", "model key"} <= set(
        report
    )
    assert all(c["ok"] for c in report.values()), report
    assert "2.1.332" in report["image"]["detail"]
    assert "sqlite" in report["state"]["detail"]


def test_doctor_says_how_to_fix_an_unreachable_audit_store(tmp_path: Path) -> None:
    env = {**os.environ, "CORRAL_AUDIT_URL": "mongodb://127.0.0.1:1/corral?serverSelectionTimeoutMS=300"}
    proc = subprocess.run(
        [sys.executable, "-m", "corral", "doctor", "--repo", str(tmp_path), "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    audit = next(c for c in json.loads(proc.stdout) if c["name"] == "audit")
    assert not audit["ok"] and "127.0.0.1:1" in audit["detail"] and audit["fix"]


def test_after_a_run_the_reports_agree(agent_image: str, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "demo", DEMO_FILES, DEMO_CONFIG)
    result = run_task(repo, DEMO_TASK, demo_playbook_path())
    run_id = result.run_id

    runs: list[dict[str, Any]] = json.loads(corral("runs", "--json").stdout)
    assert [r["run_id"] for r in runs] == [run_id]
    shown = json.loads(corral("show", run_id[:6], "--json").stdout)
    assert shown["phase"] == "awaiting_approval" and shown["events"] == len(result.events)
    assert "calc/ops.py" in shown["diffstat"]

    [verify] = json.loads(corral("audit", "verify", run_id, "--json").stdout)
    assert verify["ok"] and verify["events"] == len(result.events) and verify["problems"] == []

    # The timeline lists every command and the edit, in the order they happened.
    timeline = corral("audit", "show", run_id).stdout
    first_run = timeline.index("$ python3 -m pytest -q")
    edit = timeline.index("calc/ops.py", first_run)
    second_run = timeline.index("$ python3 -m pytest -q", edit)
    assert first_run < edit < second_run

    exported = tmp_path / "run.jsonl"
    corral("audit", "export", run_id, "--format", "jsonl", "-o", str(exported))
    assert len(exported.read_text().splitlines()) >= len(result.events)
    [offline] = json.loads(corral("audit", "verify", "--file", str(exported), "--json").stdout)
    assert offline["ok"] and offline["run_id"] == run_id and offline["events"] == len(result.events)

    gc = json.loads(corral("gc", "--json").stdout)
    assert gc["containers"] == [] and gc["runs_failed"] == []


def test_run_reports_a_dirty_tree_and_leaves_it_alone(agent_image: str, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"a.py": "x = 1\n"}, "[checks]\ncommand = 'true'\n")
    (repo / "a.py").write_text("x = 2  # my work in progress\n")
    playbook = tmp_path / "p.yaml"
    playbook.write_text("turns:\n  - tool_use: [{name: Bash, input: {command: 'cat a.py'}}]\n")
    proc = corral("run", "look", "--repo", str(repo), "--playbook", str(playbook))
    assert "uncommitted changes are not included" in proc.stderr and "a.py" in proc.stderr
    assert (repo / "a.py").read_text() == "x = 2  # my work in progress\n"
    run_id = json.loads(corral("runs", "--json").stdout)[0]["run_id"]
    shell = stored_run(Settings(), run_id).of("shell.command")
    assert shell[0].output.strip() == "x = 1"  # the agent worked on the committed file, not the edit


def test_without_a_key_or_playbook_the_scripted_model_says_so(agent_image: str, tmp_path: Path) -> None:
    from corral.services import NO_KEY_TEXT

    repo = make_repo(tmp_path / "r", {"a.py": "x = 1\n"}, "[checks]\ncommand = 'true'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    proc = subprocess.run(
        [sys.executable, "-m", "corral", "run", "do something", "--repo", str(repo), "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"kind"')]
    responses = [e for e in events if e["kind"] == "model.response"]
    assert responses and responses[-1]["text"] == NO_KEY_TEXT
