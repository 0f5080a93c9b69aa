"""Learned preferences end to end: a rejection's feedback reaches the next run's system prompt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import make_repo, run_task, serve_upstream, stored_run

pytestmark = pytest.mark.docker

FEEDBACK = "Keep calc functions pure and never print from them; tests stay in tests/test_calc_ops.py"
PLAYBOOK = "turns:\n  - tool_use: [{name: Bash, input: {command: 'ls'}}]\n  - text: done\n"
TASK = "Fix the failing calc test in calc/ops.py"


def corral(*args: str) -> Any:
    proc = subprocess.run(
        [sys.executable, "-m", "corral", *args, "--json"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_rejection_feedback_is_injected_next_time_and_retired_preferences_are_not(
    agent_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    playbook = tmp_path / "p.yaml"
    playbook.write_text(PLAYBOOK)
    repo = make_repo(
        tmp_path / "repo", {"calc/ops.py": "def add(a, b):\n    return a + b\n"}, "[checks]\ncommand='true'\n"
    )

    with serve_upstream(playbook, monkeypatch) as upstream:
        first = run_task(repo, TASK)
        assert first.record.phase == "awaiting_approval"
        assert first.of("prefs.injected") == []
        assert all(FEEDBACK not in system for system in upstream.systems)

        rejected = corral("reject", first.run_id, "--feedback", FEEDBACK, "--as", "release-lead")
        pref_id = rejected["preference"]["id"]
        assert rejected["preference"]["source_ref"] == f"approval:{rejected['approval']['id']}"

        upstream.systems.clear()
        second = run_task(repo, TASK)
        assert second.record.phase == "awaiting_approval"
        assert [e.preference_ids for e in second.of("prefs.injected")] == [[str(pref_id)]]
        assert second.record.preference_ids == [pref_id]
        main_thread = [s for s in upstream.systems if "corral" in s.lower()]
        assert main_thread and all(FEEDBACK in system for system in main_thread)

        corral("prefs", "retire", str(pref_id))
        upstream.systems.clear()
        third = run_task(repo, TASK)
        assert third.of("prefs.injected") == []
        assert upstream.systems and all(FEEDBACK not in system for system in upstream.systems)

    # The rejection is in the first run's audit chain, by a named human, and the chain still verifies.
    rejections = stored_run(first.settings, first.run_id).of("approval.rejected")
    assert len(rejections) == 1 and rejections[0].actor == "human:release-lead"
    assert rejections[0].comment == FEEDBACK
